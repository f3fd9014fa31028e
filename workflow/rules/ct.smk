# The CT prior: the CT corpus (synthetic in the DeepLesion layout, or an external DeepLesion
# copy / DICOM tree at ct.path), the CT VAE trained on it, and the latents of every slice.
#
# One thread per rule: these small convolutions gain little from a second thread, and a
# second OpenMP thread on a busy core slows training by an order of magnitude (see
# docs/benchmarks.md), while Snakemake can run another job on the free core.
#
# checkpoint.pt is flagged update(): Snakemake does not delete it before rerunning the job, so
# a killed training job resumes from it when its fingerprint (VAE settings, seed, image size
# and the corpus itself) matches; otherwise training starts from scratch.
import os

# The corpus as rule input: DL_info.csv + Images_png/ of a DeepLesion-layout root, or the DICOM
# folder itself. The corpus root handed to the CLI is derived from it (_CT_ROOT).
if config["ct"]["source"] == "synthetic":
    CT_INPUT = [results("ct", "DL_info.csv"), results("ct", "Images_png")]
elif config["ct"]["source"] == "deeplesion":
    CT_INPUT = [
        os.path.join(config["ct"]["path"], "DL_info.csv"),
        os.path.join(config["ct"]["path"], "Images_png"),
    ]
else:
    CT_INPUT = [config["ct"]["path"]]
_CT_ROOT = lambda wildcards, input: (
    os.path.dirname(input.corpus[0]) if len(CT_INPUT) == 2 else input.corpus[0]
)


rule make_ct_corpus:
    output:
        info=results("ct", "DL_info.csv"),
        images=directory(results("ct", "Images_png")),
    log:
        logs("make_ct_corpus/make_ct_corpus.log"),
    benchmark:
        benchmarks("make_ct_corpus/make_ct_corpus.tsv")
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=1500,
        runtime=15,
    params:
        cfg=cfg_json("ct"),
        out=lambda wildcards, output: os.path.dirname(output.info),
    shell:
        "positrongan make-ct-corpus --config-json {params.cfg:q} --threads {threads} "
        "--out {params.out} > {log} 2>&1"


rule train_vae:
    input:
        corpus=CT_INPUT,
    output:
        model=results("vae", "model.pt"),
        losses=results("vae", "losses.csv"),
        recon=results("vae", "recon.png"),
        checkpoint=update(results("vae", "checkpoint.pt")),
    log:
        logs("train_vae/train_vae.log"),
    benchmark:
        benchmarks("train_vae/train_vae.tsv")
    conda:
        "../../envs/torch.yaml"
    threads: capped_threads(1)
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        cfg=cfg_json("ct", "vae", "dataset.image_size"),
        root=_CT_ROOT,
    shell:
        "positrongan train-vae --config-json {params.cfg:q} --threads {threads} "
        "--corpus {params.root:q} --model {output.model} --losses {output.losses} "
        "--recon {output.recon} --checkpoint {output.checkpoint} > {log} 2>&1"


rule encode_ct:
    input:
        corpus=CT_INPUT,
        model=results("vae", "model.pt"),
    output:
        latents=results("vae", "latents.npz"),
    log:
        logs("encode_ct/encode_ct.log"),
    benchmark:
        benchmarks("encode_ct/encode_ct.tsv")
    conda:
        "../../envs/torch.yaml"
    threads: capped_threads(1)
    resources:
        mem_mb=3000,
        runtime=15,
    params:
        cfg=cfg_json("ct", "vae"),
        root=_CT_ROOT,
    shell:
        "positrongan encode-ct --config-json {params.cfg:q} --threads {threads} "
        "--corpus {params.root:q} --model {input.model} --out {output.latents} > {log} 2>&1"


TARGETS["ct"] = [
    results("vae", name)
    for name in ("model.pt", "losses.csv", "recon.png", "checkpoint.pt", "latents.npz")
] + ([results("ct", "DL_info.csv")] if config["ct"]["source"] == "synthetic" else [])
