"""Rebuilding a trained generator from ``generator.pt`` and drawing samples from it; how is
each registered method's business (:meth:`~positrongan.train.loop.Trainer.network` and
:meth:`~positrongan.train.loop.Trainer.draw`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ArtifactError, ConfigError
from ..io import load_torch
from .latents import CTLatents
from .registry import METHODS


def load_generator(path: str | Path, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Read generator.pt.

    Returns:
        (the network in eval mode on ``device``, the blob's metadata without weights).
    Raises:
        ArtifactError: missing, corrupt or not a generator file.
    """
    path = Path(path)
    blob = load_torch(path, required=("method", "state_dict", "hparams"), what="generator file")
    if blob["method"] not in METHODS:
        raise ArtifactError(f"{path}: not a generator file written by `positrongan train`")
    try:
        net = METHODS[blob["method"]].trainer.network(blob["hparams"])
        net.load_state_dict(blob["state_dict"])
    except (TypeError, ValueError, RuntimeError, KeyError) as exc:
        raise ArtifactError(f"{path}: weights do not match their hparams ({exc})") from None
    meta = {k: v for k, v in blob.items() if k != "state_dict"}
    return net.to(device).eval(), meta


@torch.no_grad()
def generate(
    net: torch.nn.Module,
    meta: dict[str, Any],
    n: int,
    seed: int,
    latent: str = "ct",
    ct: tuple[np.ndarray, np.ndarray] | None = None,
    batch: int = 64,
) -> np.ndarray:
    """Draw n images in [0, 1].

    Params:
        net, meta: from :func:`load_generator`.
        n: number of samples.
        seed: sampling seed.
        latent: for methods with a memory (ours): ``ct`` (z = mu + sigma * eps of random CT
            slices) or ``prior`` (N(0, I)).
        ct: (mu, logvar) of the CT slices, needed for ``ct`` unless the generator file carries
            its fine-tuned encoder's latents.
        batch: images per forward pass.
    Returns:
        (n, S, S) float32 in [0, 1] (the dataset's normalisation).
    """
    device = next(net.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    spec = METHODS[meta["method"]]
    source = None
    if spec.memory and latent == "ct":
        if "ct_mu" in meta:
            source = CTLatents(meta["ct_mu"], meta["ct_logvar"]).to(device)
        elif ct is not None:
            source = CTLatents(torch.from_numpy(ct[0]), torch.from_numpy(ct[1])).to(device)
        else:
            raise ConfigError("training.sample_latent = 'ct' needs the CT latents (vae/latents.npz)")
        if source.dim != net.latent_dim:
            raise ArtifactError(f"CT latents have dimension {source.dim}, the generator expects {net.latent_dim}")
    out = []
    for start in range(0, n, batch):
        m = min(batch, n - start)
        z = source(m, g) if source is not None else None
        x = spec.trainer.draw(net, m, g, z)
        out.append(((x.float().clamp(-1, 1) + 1) / 2)[:, 0].cpu().numpy())
    return np.concatenate(out).astype(np.float32)
