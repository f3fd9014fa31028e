# Evaluation of every method's samples against the held-out real positron images:
# MS-SSIM (diversity, memorisation), FID/KID (when the Inception weights are present), SWD, C2ST,
# per (method or variant, seed), with the two real floors; and the statistics of the held-out
# reference they are measured against (reference.npz).

EVAL_RUNS = METHODS + [v for v in config["training"]["variants"] if v not in METHODS]


rule evaluate_methods:
    input:
        dataset=results("dataset", "positron.npz"),
        samples=expand(
            results("samples", "{method}_seed{seed}.npz"),
            method=EVAL_RUNS,
            seed=config["training"]["seeds"],
        ),
    output:
        metrics=report(
            results("eval", "metrics.csv"),
            caption="../report/metrics.rst",
            category="Evaluation",
        ),
        table=report(
            results("eval", "table.md"),
            caption="../report/table.rst",
            category="Evaluation",
        ),
        grid=report(
            results("eval", "grid.png"),
            caption="../report/grid.rst",
            category="Evaluation",
        ),
        reference=results("eval", "reference.npz"),
    log:
        "logs/evaluate_methods/eval.log",
    benchmark:
        "benchmarks/evaluate_methods/eval.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: capped_threads(2)
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        cfg=cfg_json("training", "evaluation"),
    shell:
        "positrongan evaluate --config-json {params.cfg:q} --threads {threads} "
        "--dataset {input.dataset} --samples {input.samples} "
        "--metrics {output.metrics} --table {output.table} --grid {output.grid} "
        "--reference {output.reference} > {log} 2>&1"


TARGETS["evaluate"] = [
    results("eval", "metrics.csv"),
    results("eval", "table.md"),
    results("eval", "grid.png"),
    results("eval", "reference.npz"),
]
