# Reconstruction: the ring's system model (built once per geometry and grid), then MLEM/OSEM of
# every scan with attenuation correction from its truth mu-map and randoms from the delayed window.


rule build_system_model:
    output:
        results("recon", "system_model.npz"),
    log:
        "logs/build_system_model/system_model.log",
    benchmark:
        "benchmarks/build_system_model/system_model.tsv"
    conda:
        "../../envs/recon.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        cfg=cfg_json("scanner", "reconstruction"),
    shell:
        "positrongan system-model --config-json {params.cfg:q} --threads {threads} "
        "--out {output} > {log} 2>&1"


rule reconstruct_scan:
    input:
        root=results("sim", "{scan}.root"),
        truth=results("truth", "{scan}.npz"),
        model=results("recon", "system_model.npz"),
    output:
        # The DICOM series is an output only when the config asks for it.
        **(
            {"dicom": directory(results("recon", "{scan}_dicom"))}
            if config["reconstruction"]["dicom"]
            else {}
        ),
        npz=results("recon", "{scan}.npz"),
        png=results("recon", "{scan}.png"),
    log:
        "logs/reconstruct_scan/{scan}.log",
    benchmark:
        "benchmarks/reconstruct_scan/{scan}.tsv"
    conda:
        "../../envs/recon.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=20,
    params:
        cfg=cfg_json("scanner", "reconstruction"),
        dicom=lambda wildcards, output: (
            f"--dicom {output.dicom}" if config["reconstruction"]["dicom"] else ""
        ),
    shell:
        "positrongan reconstruct --config-json {params.cfg:q} --threads {threads} "
        "--scan {wildcards.scan} --root {input.root} --truth {input.truth} "
        "--system-model {input.model} --out {output.npz} --png {output.png} {params.dicom} "
        "> {log} 2>&1"


TARGETS["reconstruct"] = expand(
    results("recon", "{scan}.{ext}"), scan=SCANS, ext=["npz", "png"]
) + (
    expand(results("recon", "{scan}_dicom"), scan=SCANS)
    if config["reconstruction"]["dicom"]
    else []
)
