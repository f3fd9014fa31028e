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
        logs("train_detector/detector.log"),
    benchmark:
        benchmarks("train_detector/detector.tsv")
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
        logs("evaluate_detection/detection.log"),
    benchmark:
        benchmarks("evaluate_detection/detection.tsv")
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


# Augmentation utility (issue 17 item 4, docs/detection.md): the mask-conditioned generator
# (truth + defect labels -> reference slice) on the training split, one per seed; and the study
# of detectors trained on N real slices with and without generated slices. Both are off in the
# default target (detection.conditional.enabled, detection.augmentation.enabled) and on in
# config/study.yaml.
CONDITIONAL_SEEDS = config["detection"]["conditional"]["seeds"]


rule train_conditional:
    input:
        dataset=results("dataset", "positron.npz"),
    output:
        model=results("train", "conditional", "seed{cond_seed}.pt"),
        log=results("train", "conditional", "seed{cond_seed}.json"),
        png=report(
            results("train", "conditional", "seed{cond_seed}.png"),
            caption="../report/conditional.rst",
            category="Detection",
        ),
    log:
        logs("train_conditional/seed{cond_seed}.log"),
    benchmark:
        benchmarks("train_conditional/seed{cond_seed}.tsv")
    wildcard_constraints:
        cond_seed=r"\d+",
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        cfg=cfg_json("detection"),
    shell:
        "positrongan train-conditional --config-json {params.cfg:q} --threads {threads} "
        "--dataset {input.dataset} --seed {wildcards.cond_seed} --out {output.model} "
        "--log {output.log} --png {output.png} > {log} 2>&1"


rule evaluate_augmentation:
    input:
        dataset=results("dataset", "positron.npz"),
    output:
        csv=results("eval", "augmentation.csv"),
        table=report(
            results("eval", "augmentation.md"),
            caption="../report/augmentation_table.rst",
            category="Detection",
        ),
        png=report(
            results("eval", "augmentation.png"),
            caption="../report/augmentation.rst",
            category="Detection",
        ),
    log:
        logs("evaluate_augmentation/augmentation.log"),
    benchmark:
        benchmarks("evaluate_augmentation/augmentation.tsv")
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=120,
    params:
        cfg=cfg_json("detection"),
    shell:
        "positrongan evaluate-augmentation --config-json {params.cfg:q} --threads {threads} "
        "--dataset {input.dataset} --csv {output.csv} --table {output.table} --png {output.png} "
        "> {log} 2>&1"


TARGETS["detect"] = [
    results("detect", "detector.pt"),
    results("detect", "detector.json"),
    results("eval", "detection.csv"),
    results("eval", "detection.png"),
    results("eval", "detection.md"),
]
if config["detection"]["conditional"]["enabled"]:
    TARGETS["conditional"] = [
        results("train", "conditional", f"seed{s}.{ext}")
        for s in CONDITIONAL_SEEDS
        for ext in ("pt", "json", "png")
    ]
if config["detection"]["augmentation"]["enabled"]:
    TARGETS["augmentation"] = [
        results("eval", f"augmentation.{ext}") for ext in ("csv", "md", "png")
    ]
