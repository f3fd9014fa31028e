# Reconstruction: the ring's system model (built once per geometry and grid), then MLEM/OSEM of
# every scan with attenuation correction from its truth mu-map and randoms from the delayed window.

# Only 2d mode reads the cached system model; 3d mode projects on the fly.
SYSTEM_MODEL = (
    {"model": results("recon", "system_model.npz")}
    if config["reconstruction"]["mode"] == "2d"
    else {}
)


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
        **SYSTEM_MODEL,
        root=results("sim", "{scan}.root"),
        truth=results("truth", "{scan}.npz"),
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
        # The randoms model needs the sorter's window and policy and the acquisition time; the
        # DICOM calibration needs the activity.
        cfg=cfg_json(
            "scanner",
            "reconstruction",
            "dataset.image_size",
            "dataset.slice_planes",
            "digitizer.coincidence_window_ns",
            "digitizer.multiples_policy",
            "phantom.activity_bq",
            "phantom.acquisition_s",
        ),
        model=lambda wildcards, input: (
            f"--system-model {input.model}" if SYSTEM_MODEL else ""
        ),
        dicom=lambda wildcards, output: (
            f"--dicom {output.dicom}" if config["reconstruction"]["dicom"] else ""
        ),
    shell:
        "positrongan reconstruct --config-json {params.cfg:q} --threads {threads} "
        "--scan {wildcards.scan} --root {input.root} --truth {input.truth} "
        "{params.model} --out {output.npz} --png {output.png} {params.dicom} "
        "> {log} 2>&1"


rule reconstruct_lowcount:
    # A short-scan twin: the same scan with each event kept with probability {fraction}.
    input:
        **SYSTEM_MODEL,
        root=results("sim", "{scan}.root"),
        truth=results("truth", "{scan}.npz"),
    output:
        npz=results("recon", "lowcount", "{scan}_f{fraction}.npz"),
        png=results("recon", "lowcount", "{scan}_f{fraction}.png"),
    log:
        "logs/reconstruct_lowcount/{scan}_f{fraction}.log",
    benchmark:
        "benchmarks/reconstruct_lowcount/{scan}_f{fraction}.tsv"
    conda:
        "../../envs/recon.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=20,
    params:
        # The randoms model needs the sorter's window and policy and the acquisition time; the
        # DICOM calibration needs the activity.
        cfg=cfg_json(
            "scanner",
            "reconstruction",
            "dataset.image_size",
            "dataset.slice_planes",
            "digitizer.coincidence_window_ns",
            "digitizer.multiples_policy",
            "phantom.activity_bq",
            "phantom.acquisition_s",
        ),
        model=lambda wildcards, input: (
            f"--system-model {input.model}" if SYSTEM_MODEL else ""
        ),
    shell:
        "positrongan reconstruct --config-json {params.cfg:q} --threads {threads} "
        "--scan {wildcards.scan} --root {input.root} --truth {input.truth} "
        "{params.model} --fraction {wildcards.fraction} "
        "--out {output.npz} --png {output.png} > {log} 2>&1"


rule summarize_detectability:
    input:
        recon=expand(results("recon", "{scan}.npz"), scan=SCANS),
    output:
        csv=report(
            results("recon", "detectability.csv"),
            caption="../report/detectability_csv.rst",
            category="Reconstruction",
        ),
        png=report(
            results("recon", "detectability.png"),
            caption="../report/detectability.rst",
            category="Reconstruction",
        ),
    log:
        "logs/summarize_detectability/detectability.log",
    benchmark:
        "benchmarks/summarize_detectability/detectability.tsv"
    conda:
        "../../envs/recon.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        cfg=cfg_json(),
    shell:
        "positrongan detectability --config-json {params.cfg:q} --threads {threads} "
        "--recon {input.recon} --csv {output.csv} --png {output.png} > {log} 2>&1"


TARGETS["detectability"] = [
    results("recon", "detectability.csv"),
    results("recon", "detectability.png"),
]
TARGETS["lowcount"] = expand(
    results("recon", "lowcount", "{scan}_{tag}.{ext}"),
    scan=SCANS,
    tag=LOW_COUNT_TAGS,
    ext=["npz", "png"],
)
TARGETS["reconstruct"] = expand(
    results("recon", "{scan}.{ext}"), scan=SCANS, ext=["npz", "png"]
) + (
    expand(results("recon", "{scan}_dicom"), scan=SCANS)
    if config["reconstruction"]["dicom"]
    else []
)
