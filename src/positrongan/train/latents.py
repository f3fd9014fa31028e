"""Where the generator's query z comes from: the CT VAE's latents or the prior N(0, I); and the
reader and writer of the latents artifact (``vae/latents.npz``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ArtifactError
from ..io import load_npz, save_npz


class CTLatents(nn.Module):
    """z = mu + sigma * eps of random CT slices, from the precomputed ``vae/latents.npz``.

    Params:
        mu, logvar: (N, d) posterior parameters of N CT slices.
    """

    def __init__(self, mu: torch.Tensor, logvar: torch.Tensor):
        super().__init__()
        self.register_buffer("mu", torch.as_tensor(mu, dtype=torch.float32))
        self.register_buffer("logvar", torch.as_tensor(logvar, dtype=torch.float32))

    @property
    def dim(self) -> int:
        return self.mu.shape[1]

    def forward(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        dev = self.mu.device
        idx = torch.randint(self.mu.shape[0], (n,), generator=generator, device=dev)
        eps = torch.randn(n, self.dim, generator=generator, device=dev)
        return self.mu[idx] + torch.exp(0.5 * self.logvar[idx]) * eps


class CTEncoderLatents(nn.Module):
    """z from the CT VAE's encoder applied to random CT slices, so the encoder can be
    fine-tuned jointly (``training.train_encoder``).

    Params:
        encoder: the ConvVAE (only ``encode`` is used).
        ct_images: (N, 1, S, S) CT slices in [-1, 1].
    """

    def __init__(self, vae: nn.Module, ct_images: torch.Tensor):
        super().__init__()
        self.vae = vae
        self.register_buffer("ct", ct_images)

    @property
    def dim(self) -> int:
        return self.vae.latent_dim

    def forward(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        idx = torch.randint(self.ct.shape[0], (n,), generator=generator, device=self.ct.device)
        mu, logvar = self.vae.encode(self.ct[idx])
        eps = torch.randn(mu.shape, generator=generator, device=mu.device)
        return mu + torch.exp(0.5 * logvar) * eps

    @torch.no_grad()
    def encode_all(self, batch: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of every CT slice with the (fine-tuned) encoder, in eval mode."""
        was = self.vae.training
        self.vae.eval()
        out = [self.vae.encode(self.ct[i : i + batch]) for i in range(0, self.ct.shape[0], batch)]
        self.vae.train(was)
        return torch.cat([o[0] for o in out]).cpu(), torch.cat([o[1] for o in out]).cpu()


def prior(n: int, dim: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
    """z ~ N(0, I), the VAE's prior."""
    return torch.randn(n, dim, generator=generator, device=device)


def save_latents(path: str | Path, mu: np.ndarray, logvar: np.ndarray, names: list[str]) -> None:
    """Write ``vae/latents.npz``: ``mu`` and ``logvar`` (N, d) float32 and the slice ``names``."""
    save_npz(path, mu=np.asarray(mu, np.float32), logvar=np.asarray(logvar, np.float32), names=np.array(names))


def load_latents(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(mu, logvar), each (N, d) float32, from ``vae/latents.npz``.

    Raises:
        ArtifactError: naming the file, when it is missing, malformed or not finite.
    """
    data = load_npz(path, required=("mu", "logvar"))
    mu, logvar = data["mu"].astype(np.float32), data["logvar"].astype(np.float32)
    if mu.ndim != 2 or mu.shape != logvar.shape or len(mu) == 0:
        raise ArtifactError(f"{path}: 'mu' and 'logvar' must be non-empty (N, d) arrays of one shape")
    if not (np.isfinite(mu).all() and np.isfinite(logvar).all()):
        raise ArtifactError(f"{path}: non-finite latents")
    return mu, logvar
