# Enhancement mode (docs/enhancement.md): each enhancement method, once per training seed (the
# classical methods, tuned on val and deterministic, once), maps the test scans' short-scan
# twins to reference slices; then every run is scored against the reference and the truth,
# beside the raw low-count slices.

ENHANCE_METHODS = [
    m
    for m in (
        config["enhancement"]["methods"]
        if config["dataset"]["low_count_fractions"]
        else []
    )
    # The reconstruction-side baselines need the 3D OSEM (config.check_warnings says so).
    if config["reconstruction"]["mode"] == "3d" or m not in ("osem_early", "map_rdp")
]
ENHANCE_CLASSICAL = ("gaussian", "osem_early", "map_rdp")
ENHANCE_RUNS = [
    (m, s)
    for m in ENHANCE_METHODS
    for s in (config["enhancement"]["seeds"] if m not in ENHANCE_CLASSICAL else [0])
]


wildcard_constraints:
    enh_method="ours|unet|pix2pix|gaussian|osem_early|map_rdp",
    enh_seed=r"\d+",


rule enhance_slices:
    input:
        unpack(_enhance_inputs),
    output:
        npz=results("enhance", "{enh_method}", "seed{enh_seed}.npz"),
        figure=report(
            results("enhance", "{enh_method}", "seed{enh_seed}.png"),
            caption="../report/enhance_figure.rst",
            category="Enhancement",
            subcategory="{enh_method}",
        ),
    log:
        logs("enhance_slices/{enh_method}_seed{enh_seed}.log"),
    benchmark:
        benchmarks("enhance_slices/{enh_method}_seed{enh_seed}.tsv")
    conda:
        "../../envs/torch.yaml"
    threads: capped_threads(1)
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        cfg=cfg_json("enhancement"),
        extra=_enhance_extra,
    shell:
        "positrongan enhance --config-json {params.cfg:q} --threads {threads} "
        "--method {wildcards.enh_method} --seed {wildcards.enh_seed} --dataset {input.dataset} "
        "{params.extra} --out {output.npz} --figure {output.figure} > {log} 2>&1"


rule evaluate_enhancement:
    input:
        dataset=results("dataset", "positron.npz"),
        enhanced=[results("enhance", m, f"seed{s}.npz") for m, s in ENHANCE_RUNS],
        truth=expand(results("truth", "{scan}.npz"), scan=SCANS),
        recon=expand(
            results("recon", "lowcount", "{scan}_{tag}.npz"),
            scan=SCANS,
            tag=LOW_COUNT_TAGS,
        ),
    output:
        metrics=report(
            results("eval", "enhance_metrics.csv"),
            caption="../report/enhance_metrics.rst",
            category="Enhancement",
        ),
        runs=results("eval", "enhance_runs.csv"),
        defects=results("eval", "enhance_defects.csv"),
        table=report(
            results("eval", "enhance_table.md"),
            caption="../report/enhance_metrics.rst",
            category="Enhancement",
        ),
    log:
        logs("evaluate_enhancement/eval.log"),
    benchmark:
        benchmarks("evaluate_enhancement/eval.tsv")
    conda:
        "../../envs/torch.yaml"
    threads: capped_threads(1)
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        cfg=cfg_json("dataset", "evaluation"),
    shell:
        "positrongan evaluate-enhance --config-json {params.cfg:q} --threads {threads} "
        "--dataset {input.dataset} --enhanced {input.enhanced} --truth {input.truth} "
        "--recon {input.recon} --metrics {output.metrics} --runs {output.runs} "
        "--defects {output.defects} --table {output.table} > {log} 2>&1"


if ENHANCE_RUNS:
    TARGETS["enhance"] = [
        results("enhance", m, f"seed{s}.{ext}")
        for m, s in ENHANCE_RUNS
        for ext in ("npz", "png")
    ] + [
        results("eval", name)
        for name in (
            "enhance_metrics.csv",
            "enhance_runs.csv",
            "enhance_defects.csv",
            "enhance_table.md",
        )
    ]
