# Simulation: one Monte Carlo run per scan (fast engine by default, opengate when asked and
# available) -> GATE-schema ROOT file, the scan's JSON (phantom as drawn, defects, counts) and
# the truth maps on the reconstruction grid.


rule simulate_scan:
    output:
        root=results("sim", "{scan}.root"),
        meta=results("sim", "{scan}.json"),
        truth=results("truth", "{scan}.npz"),
    log:
        logs("simulate_scan/{scan}.log"),
    benchmark:
        benchmarks("simulate_scan/{scan}.tsv")
    conda:
        "../../envs/sim.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        # The truth maps live on the reconstruction grid: only its size is read here.
        cfg=cfg_json(
            "scans",
            "phantom",
            "scanner",
            "digitizer",
            "simulation",
            "reconstruction.grid",
            "reconstruction.fov_mm",
        ),
    shell:
        "positrongan simulate --config-json {params.cfg:q} --threads {threads} "
        "--scan {wildcards.scan} --root {output.root} --meta {output.meta} "
        "--truth {output.truth} > {log} 2>&1"


TARGETS["simulate"] = expand(
    results("sim", "{scan}.{ext}"), scan=SCANS, ext=["root", "json"]
) + expand(results("truth", "{scan}.npz"), scan=SCANS)
