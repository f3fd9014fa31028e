# The 2D positron image dataset: slices of every reconstruction with their truth, split by scan.


rule build_positron_dataset:
    input:
        recon=expand(results("recon", "{scan}.npz"), scan=SCANS),
        truth=expand(results("truth", "{scan}.npz"), scan=SCANS),
        low_count=expand(
            results("recon", "lowcount", "{scan}_{tag}.npz"),
            scan=SCANS,
            tag=LOW_COUNT_TAGS,
        ),
    output:
        npz=results("dataset", "positron.npz"),
        png=results("dataset", "positron.png"),
        twins=report(
            results("dataset", "twins.png"),
            caption="../report/twins.rst",
            category="Dataset",
        ),
    log:
        logs("build_positron_dataset/positron.log"),
    benchmark:
        benchmarks("build_positron_dataset/positron.tsv")
    conda:
        "../../envs/recon.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=10,
    params:
        cfg=cfg_json("dataset"),
    shell:
        "positrongan build-dataset --config-json {params.cfg:q} --threads {threads} "
        "--recon {input.recon} --truth {input.truth} --low-count {input.low_count} "
        "--out {output.npz} --png {output.png} --twins-png {output.twins} "
        "> {log} 2>&1"


TARGETS["dataset"] = [
    results("dataset", "positron.npz"),
    results("dataset", "positron.png"),
    results("dataset", "twins.png"),
]
