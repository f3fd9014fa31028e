# Downstream defect detection: a small U-Net detector trained on the reference-count training
# slices, then scored on the test scans at reference counts, on the raw short-scan twins and on
# the twins enhanced by every configured enhancement method and seed (docs/detection.md).


rule train_detector:
    input:
        dataset=results("dataset", "positron.npz"),
    output:
        model=results("detect", "detector.pt"),
        meta=results("detect", "detector.json"),
    log:
        "logs/train_detector/detector.log",
    benchmark:
        "benchmarks/train_detector/detector.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        cfg=cfg_json("detection"),
    shell:
        "positrongan train-detector --config-json {params.cfg:q} --threads {threads} "
        "--dataset {input.dataset} --out {output.model} --meta {output.meta} > {log} 2>&1"


rule evaluate_detection:
    input:
        dataset=results("dataset", "positron.npz"),
        detector=results("detect", "detector.pt"),
        # The enhance runs (ENHANCE_RUNS of enhance.smk: each method and seed, the Gaussian filter
        # once), read when the DAG is built so the include order does not matter; none without
        # enhance.smk or enhancement (then only the reference and raw levels are scored).
        enhanced=lambda wildcards: [
            results("enhance", method, f"seed{seed}.npz")
            for method, seed in globals().get("ENHANCE_RUNS", [])
        ],
    output:
        csv=report(
            results("eval", "detection.csv"),
            caption="../report/detection_csv.rst",
            category="Detection",
        ),
        png=report(
            results("eval", "detection.png"),
            caption="../report/detection.rst",
            category="Detection",
        ),
        table=report(
            results("eval", "detection.md"),
            caption="../report/detection_table.rst",
            category="Detection",
        ),
    log:
        "logs/evaluate_detection/detection.log",
    benchmark:
        "benchmarks/evaluate_detection/detection.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        cfg=cfg_json("detection"),
    shell:
        "positrongan evaluate-detection --config-json {params.cfg:q} --threads {threads} "
        "--dataset {input.dataset} --detector {input.detector} --enhanced {input.enhanced} "
        "--csv {output.csv} --png {output.png} --table {output.table} > {log} 2>&1"


TARGETS["detect"] = [
    results("detect", "detector.pt"),
    results("detect", "detector.json"),
    results("eval", "detection.csv"),
    results("eval", "detection.png"),
    results("eval", "detection.md"),
]
