# Evaluation of every method's samples against the held-out real positron images:
# MS-SSIM (diversity, memorisation), FID/KID (when the Inception weights are present), SWD, C2ST,
# per (method or variant, seed), with the two real floors; and the statistics of the held-out
# reference they are measured against (reference.npz).

EVAL_RUNS = METHODS + [v for v in config["training"]["variants"] if v not in METHODS]
# A data-scarcity curve is drawn when some variant trains on fewer images (config/scarcity.yaml).
SCARCITY = any(
    "train_images" in v.get("set", {}) for v in config["training"]["variants"].values()
)


rule evaluate_methods:
    input:
        dataset=results("dataset", "positron.npz"),
        samples=expand(
            results("samples", "{method}_seed{seed}.npz"),
            method=EVAL_RUNS,
            seed=config["training"]["seeds"],
        ),
        detector=_detector,
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
        logs("evaluate_methods/eval.log"),
    benchmark:
        benchmarks("evaluate_methods/eval.tsv")
    conda:
        "../../envs/torch.yaml"
    threads: capped_threads(2)
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        cfg=cfg_json("training", "evaluation"),
        detector=lambda wc, input: (
            f"--detector {input.detector}" if input.detector else ""
        ),
    shell:
        "positrongan evaluate --config-json {params.cfg:q} --threads {threads} "
        "--dataset {input.dataset} --samples {input.samples} {params.detector} "
        "--metrics {output.metrics} --table {output.table} --grid {output.grid} "
        "--reference {output.reference} > {log} 2>&1"


TARGETS["evaluate"] = [
    results("eval", "metrics.csv"),
    results("eval", "table.md"),
    results("eval", "grid.png"),
    results("eval", "reference.npz"),
]


# The data-scarcity figure: a target only when some variant sets training.train_images.
rule plot_scarcity:
    input:
        metrics=results("eval", "metrics.csv"),
    output:
        figure=report(
            results("eval", "scarcity.png"),
            caption="../report/scarcity.rst",
            category="Evaluation",
        ),
    log:
        logs("plot_scarcity/plot.log"),
    benchmark:
        benchmarks("plot_scarcity/plot.tsv")
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "positrongan plot-scarcity --metrics {input.metrics} --out {output.figure} > {log} 2>&1"


if SCARCITY:
    TARGETS["evaluate"].append(results("eval", "scarcity.png"))
