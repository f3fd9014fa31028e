# Exports for other PET tools (docs/interop.md), written only for the formats named in
# `export.formats`: GATE 9's classic ROOT layout with the cylindricalPET geometry macro, and
# PETSIRD list mode. Both stream the scan's coincidences, so they need little memory.


rule export_gate9_macro:
    output:
        results("export", "gate9", "scanner.mac"),
    log:
        logs("export_gate9_macro/scanner.log"),
    benchmark:
        benchmarks("export_gate9_macro/scanner.tsv")
    conda:
        "../../envs/recon.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        cfg=cfg_json("scanner", "digitizer"),
    shell:
        "positrongan export --config-json {params.cfg:q} --threads {threads} "
        "--format gate9 --macro {output} > {log} 2>&1"


rule export_gate9_scan:
    input:
        root=results("sim", "{scan}.root"),
    output:
        results("export", "gate9", "{scan}.root"),
    log:
        logs("export_gate9_scan/{scan}.log"),
    benchmark:
        benchmarks("export_gate9_scan/{scan}.tsv")
    conda:
        "../../envs/recon.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        cfg=cfg_json("scanner", "digitizer", "export"),
    shell:
        "positrongan export --config-json {params.cfg:q} --threads {threads} "
        "--format gate9 --root {input.root} --out {output} > {log} 2>&1"


rule export_petsird_scan:
    input:
        root=results("sim", "{scan}.root"),
    output:
        results("export", "petsird", "{scan}.petsird"),
    log:
        logs("export_petsird_scan/{scan}.log"),
    benchmark:
        benchmarks("export_petsird_scan/{scan}.tsv")
    conda:
        "../../envs/recon.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=20,
    params:
        cfg=cfg_json("scanner", "digitizer"),
    shell:
        "positrongan export --config-json {params.cfg:q} --threads {threads} "
        "--format petsird --root {input.root} --out {output} > {log} 2>&1"


if config["export"]["formats"]:
    TARGETS["export"] = (
        [results("export", "gate9", "scanner.mac")]
        + expand(results("export", "gate9", "{scan}.root"), scan=SCANS)
        if "gate9" in config["export"]["formats"]
        else []
    ) + (
        expand(results("export", "petsird", "{scan}.petsird"), scan=SCANS)
        if "petsird" in config["export"]["formats"]
        else []
    )
