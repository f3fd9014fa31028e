# Input, param and option functions of workflow/rules/train.smk (kept apart from the rules,
# as snakemake --lint asks).


def _train_inputs(wildcards):
    inputs = {"dataset": results("dataset", "positron.npz")}
    if wildcards.method == "ours":
        inputs["features"] = results("features", "positron_features.npz")
        inputs["latents"] = results("vae", "latents.npz")
        if config["training"]["train_encoder"]:
            inputs["vae_model"] = results("vae", "model.pt")
    return inputs


def _train_cfg(wildcards):
    if wildcards.method == "ours" and config["training"]["train_encoder"]:
        return cfg_json("training", "ct")
    return cfg_json("training")


def _train_extra(wildcards, input):
    # The options only ours reads; the CT folder is where load_corpus finds the slices.
    if wildcards.method != "ours":
        return ""
    extra = f"--features {input.features} --latents {input.latents}"
    if config["training"]["train_encoder"]:
        ct_root = (
            config["ct"]["path"]
            if config["ct"]["source"] != "synthetic"
            else results("ct")
        )
        extra += f" --vae-model {input.vae_model} --ct-root {ct_root}"
    return extra


def _sample_inputs(wildcards):
    inputs = {"generator": results("train", wildcards.method, "generator.pt")}
    if wildcards.method == "ours" and config["training"]["sample_latent"] == "ct":
        inputs["latents"] = results("vae", "latents.npz")
    return inputs


def _sample_extra(wildcards, input):
    return f"--latents {input.latents}" if "latents" in input.keys() else ""
