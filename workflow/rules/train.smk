# Training of ours (attention memory + DenseNet G + PatchGAN D) and the baselines (vae, dcgan,
# wgan_gp) with the same budget, and sampling from each trained generator.
#
# checkpoint.pt is flagged update(): Snakemake does not delete it before rerunning the job, so
# a rerun resumes from it (when its fingerprint matches the config and data; otherwise training
# starts from scratch). Snakemake still deletes the outputs of a failed or killed job unless run
# with --keep-incomplete; so: `snakemake --keep-incomplete ...`, and after an interruption
# `snakemake --keep-incomplete --rerun-incomplete ...` continues from the last checkpoint.


include: "train_functions.smk"


wildcard_constraints:
    method="|".join(METHODS),


rule train_gan:
    input:
        unpack(_train_inputs),
    output:
        generator=results("train", "{method}", "generator.pt"),
        checkpoint=update(results("train", "{method}", "checkpoint.pt")),
        losses=results("train", "{method}", "losses.csv"),
        samples=results("train", "{method}", "samples.png"),
    log:
        "logs/train_gan/{method}.log",
    benchmark:
        "benchmarks/train_gan/{method}.tsv"
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
        "--method {wildcards.method} --dataset {input.dataset} {params.extra} "
        "--generator {output.generator} --checkpoint {output.checkpoint} "
        "--losses {output.losses} --samples {output.samples} > {log} 2>&1"


rule sample_method:
    input:
        unpack(_sample_inputs),
    output:
        samples=results("samples", "{method}.npz"),
    log:
        "logs/sample_method/{method}.log",
    benchmark:
        "benchmarks/sample_method/{method}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: capped_threads(1)
    resources:
        mem_mb=1500,
        runtime=10,
    params:
        cfg=cfg_json("training", "evaluation.samples"),
        extra=_sample_extra,
    shell:
        "positrongan sample --config-json {params.cfg:q} --threads {threads} "
        "--method {wildcards.method} --generator {input.generator} {params.extra} "
        "--out {output.samples} > {log} 2>&1"


TARGETS["train"] = [
    results("train", m, name)
    for m in METHODS
    for name in ("generator.pt", "checkpoint.pt", "losses.csv", "samples.png")
]
TARGETS["samples"] = [results("samples", f"{m}.npz") for m in METHODS]
