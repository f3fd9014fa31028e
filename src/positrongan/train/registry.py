"""Every generative method, once: name -> trainer class and capabilities.

The CLI choices of ``train`` and ``sample``, the trainer built for a name, how a generator
file is rebuilt and sampled, and the row order of the evaluation table all come from
:data:`METHODS`. The config schema's enum for ``training.methods`` is the user contract and
is kept; a test checks that it lists exactly these names. A new method is one module with
its :class:`~positrongan.train.loop.Trainer` and one line here. (The CT VAE prior also trains
as a Trainer on the shared loop, but is no generative method of the positron images: it is
not listed.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
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


# Row order of the evaluation table: the paper's Table 1 (baselines, then ours).
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(VAETrainer, "VAE"),
        Method(DCGANTrainer, "DCGAN"),
        Method(WGANGPTrainer, "WGAN-GP"),
        Method(OursTrainer, "Ours", memory=True),
    )
}


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
