# Training of ours (attention memory + DenseNet G + PatchGAN D), the baselines (vae, dcgan,
# wgan_gp) and the named variants (training.variants, e.g. ablations) with the same budget, once
# per training seed (training.seeds), and sampling from each trained generator.
#
# checkpoint.pt is flagged update(): Snakemake does not delete it before rerunning the job, so
# a rerun resumes from it (when its fingerprint matches the config and data; otherwise training
# starts from scratch). Snakemake still deletes the outputs of a failed or killed job unless run
# with --keep-incomplete; so: `snakemake --keep-incomplete ...`, and after an interruption
# `snakemake --keep-incomplete --rerun-incomplete ...` continues from the last checkpoint.


include: "train_functions.smk"


# Method rows: training.methods, then the training.variants names; one run per seed of each.
RUNS = METHODS + [v for v in config["training"]["variants"] if v not in METHODS]
SEEDS = config["training"]["seeds"]


wildcard_constraints:
    method="|".join(RUNS),
    seed=r"\d+",


rule train_gan:
    input:
        unpack(_train_inputs),
    output:
        generator=results("train", "{method}", "seed{seed}", "generator.pt"),
        checkpoint=update(results("train", "{method}", "seed{seed}", "checkpoint.pt")),
        losses=results("train", "{method}", "seed{seed}", "losses.csv"),
        samples=results("train", "{method}", "seed{seed}", "samples.png"),
    log:
        logs("train_gan/{method}_seed{seed}.log"),
    benchmark:
        benchmarks("train_gan/{method}_seed{seed}.tsv")
    conda:
        "../../envs/torch.yaml"
    threads: capped_threads(1)
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        cfg=_train_cfg,
        extra=_train_extra,
    shell:
        "positrongan train --config-json {params.cfg:q} --threads {threads} "
        "--method {wildcards.method} --seed {wildcards.seed} --dataset {input.dataset} {params.extra} "
        "--generator {output.generator} --checkpoint {output.checkpoint} "
        "--losses {output.losses} --samples {output.samples} > {log} 2>&1"


rule sample_method:
    input:
        unpack(_sample_inputs),
    output:
        samples=results("samples", "{method}_seed{seed}.npz"),
    log:
        logs("sample_method/{method}_seed{seed}.log"),
    benchmark:
        benchmarks("sample_method/{method}_seed{seed}.tsv")
    conda:
        "../../envs/torch.yaml"
    threads: capped_threads(1)
    resources:
        mem_mb=1500,
        runtime=10,
    params:
        cfg=_sample_cfg,
        extra=_sample_extra,
    shell:
        "positrongan sample --config-json {params.cfg:q} --threads {threads} "
        "--method {wildcards.method} --seed {wildcards.seed} --generator {input.generator} {params.extra} "
        "--out {output.samples} > {log} 2>&1"


TARGETS["train"] = [
    results("train", m, f"seed{s}", name)
    for m in RUNS
    for s in SEEDS
    for name in ("generator.pt", "checkpoint.pt", "losses.csv", "samples.png")
]
TARGETS["samples"] = [
    results("samples", f"{m}_seed{s}.npz") for m in RUNS for s in SEEDS
]
