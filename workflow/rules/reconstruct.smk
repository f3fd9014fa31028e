# Reconstruction: the ring's system model (built once per geometry and grid), then MLEM/OSEM of
# every scan with attenuation correction from its truth mu-map and randoms from the delayed window.

# Only 2d mode reads the cached system model; 3d mode projects on the fly.
SYSTEM_MODEL = (
    {"model": results("recon", "system_model.npz")}
    if config["reconstruction"]["mode"] == "2d"
    else {}
)
# The normalisation factors (built once per scanner), read only when the config applies them.
NORMALISATION = (
    {"norm": results("recon", "normalisation.npz")}
    if config["reconstruction"]["normalisation"]
    else {}
)


# Enhancement baselines that need more of each short-scan twin's reconstruction
# (docs/enhancement.md): osem_early keeps the image of every iteration, map_rdp reconstructs the
# twin again at each beta.
# Both live in the 3D OSEM: left out in 2d mode (config.check_warnings says so).
_TWIN_METHODS = (
    config["enhancement"]["methods"]
    if config["dataset"]["low_count_fractions"]
    and config["reconstruction"]["mode"] == "3d"
    else []
)
OSEM_EARLY = "osem_early" in _TWIN_METHODS
MAP_RDP = "map_rdp" in _TWIN_METHODS


rule build_system_model:
    output:
        results("recon", "system_model.npz"),
    log:
        logs("build_system_model/system_model.log"),
    benchmark:
        benchmarks("build_system_model/system_model.tsv")
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


rule build_normalisation:
    # A uniform source in air simulated with the scans' scanner, digitizer and engine kernel ->
    # the component normalisation factors (recon/normalisation.py).
    output:
        npz=results("recon", "normalisation.npz"),
        png=report(
            results("recon", "normalisation.png"),
            caption="../report/normalisation.rst",
            category="Reconstruction",
        ),
    log:
        logs("build_normalisation/normalisation.log"),
    benchmark:
        benchmarks("build_normalisation/normalisation.tsv")
    conda:
        "../../envs/sim.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        cfg=cfg_json(
            "scanner",
            "digitizer",
            "simulation.engine",
            "simulation.kernel",
            "simulation.chunk_decays",
            "simulation.acollinearity_fwhm_deg",
            "simulation.max_scatter_orders",
            "simulation.rayleigh",
            "simulation.beta_plus_branching",
            "phantom.activity_bq",
            "reconstruction.mode",
            "reconstruction.fov_mm",
            "reconstruction.doi_mm",
            "reconstruction.normalisation_decays",
        ),
    shell:
        "positrongan normalisation --config-json {params.cfg:q} --threads {threads} "
        "--out {output.npz} --png {output.png} > {log} 2>&1"


rule reconstruct_scan:
    input:
        **SYSTEM_MODEL,
        **NORMALISATION,
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
        logs("reconstruct_scan/{scan}.log"),
    benchmark:
        benchmarks("reconstruct_scan/{scan}.tsv")
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
        norm=lambda wildcards, input: (
            f"--normalisation {input.norm}" if NORMALISATION else ""
        ),
        dicom=lambda wildcards, output: (
            f"--dicom {output.dicom}" if config["reconstruction"]["dicom"] else ""
        ),
    shell:
        "positrongan reconstruct --config-json {params.cfg:q} --threads {threads} "
        "--scan {wildcards.scan} --root {input.root} --truth {input.truth} "
        "{params.model} {params.norm} --out {output.npz} --png {output.png} {params.dicom} "
        "> {log} 2>&1"


rule reconstruct_lowcount:
    # A short-scan twin: the same scan with each event kept with probability {fraction}. With
    # osem_early it also keeps the image of every iteration at the dataset's scale (snapshots).
    input:
        **SYSTEM_MODEL,
        **NORMALISATION,
        root=results("sim", "{scan}.root"),
        truth=results("truth", "{scan}.npz"),
    output:
        **(
            {
                "snapshots": results(
                    "recon", "lowcount", "{scan}_f{fraction}_iterations.npz"
                )
            }
            if OSEM_EARLY
            else {}
        ),
        npz=results("recon", "lowcount", "{scan}_f{fraction}.npz"),
        png=results("recon", "lowcount", "{scan}_f{fraction}.png"),
    log:
        logs("reconstruct_lowcount/{scan}_f{fraction}.log"),
    benchmark:
        benchmarks("reconstruct_lowcount/{scan}_f{fraction}.tsv")
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
            *(
                ("enhancement.osem_max_iterations", "enhancement.osem_fwhm_mm")
                if OSEM_EARLY
                else ()
            ),
        ),
        model=lambda wildcards, input: (
            f"--system-model {input.model}" if SYSTEM_MODEL else ""
        ),
        norm=lambda wildcards, input: (
            f"--normalisation {input.norm}" if NORMALISATION else ""
        ),
        snapshots=lambda wildcards, output: (
            f"--snapshots {output.snapshots}" if OSEM_EARLY else ""
        ),
    shell:
        "positrongan reconstruct --config-json {params.cfg:q} --threads {threads} "
        "--scan {wildcards.scan} --root {input.root} --truth {input.truth} "
        "{params.model} {params.norm} --fraction {wildcards.fraction} {params.snapshots} "
        "--out {output.npz} --png {output.png} > {log} 2>&1"


rule reconstruct_map:
    # map_rdp's candidates: the short-scan twin (the same thinned events) by MAP-OSEM with the
    # relative-difference prior at every enhancement.map_betas entry.
    input:
        **NORMALISATION,
        root=results("sim", "{scan}.root"),
        truth=results("truth", "{scan}.npz"),
    output:
        npz=results("recon", "map", "{scan}_f{fraction}.npz"),
    log:
        logs("reconstruct_map/{scan}_f{fraction}.log"),
    benchmark:
        benchmarks("reconstruct_map/{scan}_f{fraction}.tsv")
    conda:
        "../../envs/recon.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=30,
    params:
        cfg=cfg_json(
            "scanner",
            "reconstruction",
            "dataset.image_size",
            "dataset.slice_planes",
            "digitizer.coincidence_window_ns",
            "digitizer.multiples_policy",
            "phantom.activity_bq",
            "phantom.acquisition_s",
            "enhancement.map_betas",
        ),
        norm=lambda wildcards, input: (
            f"--normalisation {input.norm}" if NORMALISATION else ""
        ),
    shell:
        "positrongan reconstruct-map --config-json {params.cfg:q} --threads {threads} "
        "--scan {wildcards.scan} --root {input.root} --truth {input.truth} {params.norm} "
        "--fraction {wildcards.fraction} --out {output.npz} > {log} 2>&1"


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
        logs("summarize_detectability/detectability.log"),
    benchmark:
        benchmarks("summarize_detectability/detectability.tsv")
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
TARGETS["normalisation"] = (
    [results("recon", "normalisation.npz"), results("recon", "normalisation.png")]
    if config["reconstruction"]["normalisation"]
    else []
)
TARGETS["reconstruct"] = expand(
    results("recon", "{scan}.{ext}"), scan=SCANS, ext=["npz", "png"]
) + (
    expand(results("recon", "{scan}_dicom"), scan=SCANS)
    if config["reconstruction"]["dicom"]
    else []
)
