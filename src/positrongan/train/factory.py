"""One trainer per method name (pix2pix's ``define_G`` idea: networks chosen by string)."""

from __future__ import annotations

import torch
from torch import nn

from .baselines import DCGANTrainer, VAETrainer, WGANGPTrainer
from .gan import OursTrainer
from .loop import Trainer


def build_trainer(
    method: str,
    images: torch.Tensor,
    tcfg: dict,
    device: torch.device,
    memory: torch.Tensor | None = None,
    latents: nn.Module | None = None,
) -> Trainer:
    """Params:
        method: ``ours``, ``vae``, ``dcgan`` or ``wgan_gp``.
        images: (N, 1, S, S) training images in [-1, 1] on ``device``.
        tcfg: the ``training`` section.
        device: torch device.
        memory: (M, k) memory vectors (``ours`` only).
        latents: the query source (``ours`` only; see :mod:`positrongan.train.latents`).
    Returns:
        The trainer (seed torch before calling: it initialises the networks).
    """
    size = images.shape[-1]
    if method == "ours":
        if memory is None or latents is None:
            raise ValueError("method 'ours' needs the memory and the CT latents")
        return OursTrainer(latents, memory, size, tcfg, device)
    if method == "vae":
        return VAETrainer(size, tcfg, device)
    if method == "dcgan":
        return DCGANTrainer(size, tcfg, device)
    if method == "wgan_gp":
        trainer = WGANGPTrainer(size, tcfg, device)
        trainer.set_pool(images)
        return trainer
    raise ValueError(f"unknown method {method!r}")
