# Input, param and option functions of workflow/rules/train.smk (kept apart from the rules,
# as snakemake --lint asks).
from positrongan.train.registry import METHODS as _REGISTRY
from positrongan.train.registry import RUN_KEYS as _RUN_KEYS
from positrongan.train.registry import resolve as _resolve


def _resolved(name):
    """(registered method, resolved training section) of a method row or variant."""
    try:
        return _resolve(config["training"], name)
    except _ConfigError as exc:
        raise WorkflowError(f"invalid config: {exc}") from None


def _has_memory(name):
    return _REGISTRY[_resolved(name)[0]].memory


def _train_inputs(wildcards):
    inputs = {"dataset": results("dataset", "positron.npz")}
    if _has_memory(wildcards.method):
        inputs["features"] = results("features", "positron_features.npz")
        inputs["latents"] = results("vae", "latents.npz")
        if _resolved(wildcards.method)[1]["train_encoder"]:
            inputs["vae_model"] = results("vae", "model.pt")
    return inputs


def _run_cfg(name, *sections):
    """The config of one (method or variant) run as JSON: only its own training keys (and its
    variant entry), so adding a seed or a variant reruns nothing else."""
    training = {k: v for k, v in config["training"].items() if k not in _RUN_KEYS}
    if name not in _REGISTRY:
        training["variants"] = {name: config["training"]["variants"][name]}
    picked = {"seed": config["seed"], "device": config["device"], "training": training}
    picked.update({s: config[s] for s in sections})
    return json.dumps(picked, sort_keys=True, separators=(",", ":"))


def _train_cfg(wildcards):
    base, tcfg = _resolved(wildcards.method)
    if _REGISTRY[base].memory and tcfg["train_encoder"]:
        return _run_cfg(wildcards.method, "ct")
    return _run_cfg(wildcards.method)


def _sample_cfg(wildcards):
    picked = json.loads(_run_cfg(wildcards.method))
    picked["evaluation"] = {"samples": config["evaluation"]["samples"]}
    return json.dumps(picked, sort_keys=True, separators=(",", ":"))


def _train_extra(wildcards, input):
    # The options only methods with a memory read; the CT folder is where load_corpus finds the slices.
    if not _has_memory(wildcards.method):
        return ""
    extra = f"--features {input.features} --latents {input.latents}"
    if _resolved(wildcards.method)[1]["train_encoder"]:
        ct_root = (
            config["ct"]["path"]
            if config["ct"]["source"] != "synthetic"
            else results("ct")
        )
        extra += f" --vae-model {input.vae_model} --ct-root {ct_root}"
    return extra


def _sample_inputs(wildcards):
    inputs = {
        "generator": results(
            "train", wildcards.method, f"seed{wildcards.seed}", "generator.pt"
        )
    }
    base, tcfg = _resolved(wildcards.method)
    if (
        _REGISTRY[base].memory
        and tcfg["sample_latent"] == "ct"
        and tcfg["query"] == "ct"
    ):
        inputs["latents"] = results("vae", "latents.npz")
    return inputs


def _sample_extra(wildcards, input):
    return f"--latents {input.latents}" if "latents" in input.keys() else ""
