"""Every generative method, once: name -> trainer class and capabilities.

The CLI choices of ``train`` and ``sample``, the trainer built for a name, how a generator
file is rebuilt and sampled, and the row order of the evaluation table all come from
:data:`METHODS`. The config schema's enum for ``training.methods`` is the user contract and
is kept; a test checks that it lists exactly these names. A new method is one module with
its :class:`~positrongan.train.loop.Trainer` and one line here. (The CT VAE prior also trains
as a Trainer on the shared loop, but is no generative method of the positron images: it is
not listed.)

Variants (``training.variants``: name -> {method, label, set}) are further method rows built
from a registered method with some training keys replaced (:func:`resolve`): the ablations of
the paper's ideas (``memory``, ``query``, ``lambda_apg``, ``receptive_field``) are each one
config line, with no code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from .anchors import DiffusionTrainer, FastGANTrainer
from .baselines import DCGANTrainer, VAETrainer, WGANGPTrainer
from .gan import OursTrainer
from .loop import Trainer


@dataclass(frozen=True)
class Method:
    """One registered method.

    Params:
        trainer: its Trainer class (``trainer.method`` is the name).
        label: its row in the evaluation table.
        memory: trains on the attention memory (features) with queries from the CT latents;
            it is then also sampled from the CT latents when ``training.sample_latent = ct``.
    """

    trainer: type[Trainer]
    label: str
    memory: bool = False

    @property
    def name(self) -> str:
        return self.trainer.method


# Row order of the evaluation table: the paper's Table 1 (baselines, then ours), then the
# anchors of the study (not trained by default: config/study.yaml adds them).
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(VAETrainer, "VAE"),
        Method(DCGANTrainer, "DCGAN"),
        Method(WGANGPTrainer, "WGAN-GP"),
        Method(OursTrainer, "Ours", memory=True),
        Method(FastGANTrainer, "FastGAN-lite (Liu et al. 2021)"),
        Method(DiffusionTrainer, "DDPM UNet, DDIM sampling (MONAI)"),
    )
}


# Keys of ``training`` that say which runs exist, not how one run trains: a variant may not set
# them, and they are left out of each run's resolved section (so adding a seed or a variant does
# not change, and rerun, the others).
RUN_KEYS = ("methods", "variants", "seeds")


def run_names(tcfg: dict) -> list[str]:
    """Every method row to train and evaluate: ``training.methods``, then the names of
    ``training.variants`` (in their order)."""
    return list(tcfg["methods"]) + [v for v in tcfg.get("variants", {}) if v not in tcfg["methods"]]


def label(tcfg: dict, name: str) -> str:
    """The table label of a run name: the registry's label, or the variant's (its name by default)."""
    if name in METHODS:
        return METHODS[name].label
    spec = tcfg.get("variants", {}).get(name, {})
    return spec.get("label") or name


def resolve(tcfg: dict, name: str) -> tuple[str, dict]:
    """The registered method and the ``training`` section of one run name.

    A registered method trains under ``tcfg`` as it is; a variant of ``training.variants``
    (``{method, label, set}``) under ``tcfg`` with its ``set`` keys replaced. Either way the
    :data:`RUN_KEYS` are dropped from the returned section.

    Params:
        tcfg: the validated ``training`` section.
        name: a registered method or a key of ``training.variants``.
    Returns:
        (registered method name, resolved training section).
    Raises:
        ConfigError: an unknown name, or a variant whose ``set`` names a run key or an unknown
            training key or a value the schema refuses.
    """
    from ..config import validate

    base = {k: v for k, v in tcfg.items() if k not in RUN_KEYS}
    if name in METHODS:
        return name, base
    variants = tcfg.get("variants", {})
    if name not in variants:
        raise ConfigError(
            f"unknown method {name!r}; known: {', '.join(METHODS)} and training.variants {list(variants)}"
        )
    spec = variants[name]
    over = dict(spec.get("set", {}))
    bad = [k for k in over if k in RUN_KEYS]
    if bad:
        raise ConfigError(f"config key 'training.variants.{name}.set' may not set {bad}")
    try:
        merged = validate({"training": {**base, **over}})["training"]
    except ConfigError as exc:
        raise ConfigError(f"config key 'training.variants.{name}.set': {exc}") from None
    return get(spec["method"]).name, {k: v for k, v in merged.items() if k not in RUN_KEYS}


def get(name: str) -> Method:
    """The registered method ``name``; ConfigError naming the known ones otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; known: {', '.join(METHODS)}") from None


def build_trainer(
    method: str,
    images: torch.Tensor,
    tcfg: dict,
    device: torch.device,
    memory: torch.Tensor | None = None,
    latents: nn.Module | None = None,
) -> Trainer:
    """The trainer of ``method`` (pix2pix's ``define_G`` idea: networks chosen by name).

    Params:
        method: a name of :data:`METHODS`.
        images: (N, 1, S, S) training images in [-1, 1] on ``device``.
        tcfg: the ``training`` section.
        device: torch device.
        memory: (M, k) memory vectors (methods with ``memory`` only).
        latents: the query source (methods with ``memory`` only; see :mod:`positrongan.train.latents`).
    Returns:
        The trainer (seed torch before calling: it initialises the networks).
    """
    spec = get(method)
    if spec.memory and (memory is None or latents is None):
        raise ValueError(f"method {method!r} needs the memory and the CT latents")
    return spec.trainer.build(images, tcfg, device, memory=memory, latents=latents)
