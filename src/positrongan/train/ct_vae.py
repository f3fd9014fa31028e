"""The CT VAE (paper §3.2) as a :class:`~positrongan.train.loop.Trainer` on the shared loop:
Adam on the negative ELBO, over epochs of the CT corpus.

The loop owns checkpoints, resume, the non-finite guard, the loss log and the grid, as for
every other method. What is the CT VAE's own: its batches are epochs of a shuffle drawn from
(seed, epoch), and the reparameterisation noise of step ``s`` comes from (seed, s), so nothing
random depends on history and a resumed run gives the weights of an uninterrupted one; its
grid is CT slices above their reconstructions; its budget is counted in epochs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ArtifactError
from ..io import atomic_path
from ..models.vae import ConvVAE, vae_loss
from .loop import Outputs, Trainer, train

log = logging.getLogger(__name__)


def _step_seed(seed: int, *keys: int) -> int:
    return int(np.random.SeedSequence([seed % 2**63, *keys]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class CTVAETrainer(Trainer):
    """Params:
    images: (N, 1, S, S) CT slices in [-1, 1] on ``device``.
    names: one name per slice (the grid's titles).
    vae_cfg: the ``vae`` config section.
    seed: the run's seed (shuffles and reparameterisation noise).
    device: torch device.
    """

    method = "ct_vae"
    # More epochs extend a finished run; the loop settings derived from them do not change a step.
    resumable = ("epochs", "iterations", "checkpoint_every", "sample_every")

    def __init__(self, images: torch.Tensor, names: list[str], vae_cfg: Mapping, seed: int, device: torch.device):
        self.device = device
        self.seed = seed
        self.beta = float(vae_cfg["beta"])
        self.names = list(names)
        self.grid_images = images[:, 0].cpu().numpy()
        n, size = images.shape[0], images.shape[-1]
        self.batch_size = min(int(vae_cfg["batch_size"]), n)
        self.steps_per_epoch = math.ceil(n / self.batch_size)
        self.model = ConvVAE(size, int(vae_cfg["latent_dim"]), int(vae_cfg["base_channels"])).to(device)
        self.nets = {"model": self.model}
        self.opts = {"model": torch.optim.Adam(self.model.parameters(), lr=float(vae_cfg["lr"]))}
        self.updates = 0  # steps run by this process (not counting those resumed from)
        self._perm: tuple[int, torch.Tensor] | None = None
        self._step = 0

    def loop_settings(self, vae_cfg: Mapping) -> dict:
        """The ``vae`` section with the loop's keys: ``epochs`` as updates, one grid at the end."""
        total = self.steps_per_epoch * int(vae_cfg["epochs"])
        return {**vae_cfg, "iterations": total, "batch_size": self.batch_size, "sample_every": total}

    def batch(self, images: torch.Tensor, size: int, step: int) -> torch.Tensor:
        epoch, pos = divmod(step, self.steps_per_epoch)
        if self._perm is None or self._perm[0] != epoch:
            rng = np.random.default_rng(_step_seed(self.seed, 1, epoch))
            self._perm = (epoch, torch.from_numpy(rng.permutation(images.shape[0])).to(images.device))
        self._step = step
        return images[self._perm[1][pos * size : (pos + 1) * size]]

    def step(self, real: torch.Tensor) -> dict[str, float]:
        gen = torch.Generator(device=self.device).manual_seed(_step_seed(self.seed, 2, self._step))
        mu, logvar = self.model.encode(real)
        recon = self.model.decode(self.model.reparameterize(mu, logvar, gen))
        loss, rec, kl = vae_loss(recon, real, mu, logvar, self.beta)
        opt = self.opts["model"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        self.updates += 1
        epoch = self._step // self.steps_per_epoch + 1
        return {"epoch": epoch, "loss": loss.item(), "recon": rec.item(), "kl": kl.item()}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        was = self.model.training
        self.model.eval()
        out = self.model.decode(torch.randn(n, self.model.latent_dim, generator=generator, device=self.device))
        self.model.train(was)
        return out

    def write_grid(self, path: Path, generator: torch.Generator) -> None:
        was = self.model.training
        self.model.eval()
        save_recon_grid(path, self.model, self.grid_images, self.names)
        self.model.train(was)

    def export(self) -> dict[str, Any]:
        return {
            "hparams": dict(self.model.hparams),
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
        }

    @staticmethod
    def network(hparams: dict) -> nn.Module:
        return ConvVAE(**hparams)


def train_vae(
    images: np.ndarray,
    vae_cfg: Mapping,
    seed: int,
    out: Outputs,
    names: list[str] | None = None,
    device: torch.device | str = "cpu",
) -> CTVAETrainer:
    """Train (or resume) the CT VAE on CT slices in [-1, 1] with the shared loop.

    Writes ``out.generator`` (``vae/model.pt``, read by :func:`~positrongan.models.vae.load_vae`),
    ``out.checkpoint``, ``out.losses`` (step, epoch, loss, recon, kl, seconds) and ``out.samples``
    (the reconstruction grid). A checkpoint of the same run (same VAE settings except ``epochs``,
    seed and images) is resumed from; more ``epochs`` extend a finished run.

    Params:
        images: (N, S, S) float32 in [-1, 1].
        vae_cfg: the ``vae`` config section.
        seed: seed of this run (model init, shuffles, reparameterisation noise).
        out: the four outputs.
        names: one name per slice, for the grid (default: their indices).
        device: torch device.
    Returns:
        The trainer, its model in eval mode.
    Raises:
        ArtifactError: no images.
        TrainingError: the loss became non-finite (the last good checkpoint is kept).
    """
    device = torch.device(device)
    if len(images) == 0:
        raise ArtifactError("no CT images to train on")
    data = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).unsqueeze(1).to(device)
    names = list(names) if names is not None else [f"{i:05d}" for i in range(len(images))]
    torch.manual_seed(_step_seed(seed, 0))  # weight init
    trainer = CTVAETrainer(data, names, vae_cfg, seed, device)
    train(trainer, data, trainer.loop_settings(vae_cfg), out, seed)
    trainer.model.eval()
    return trainer


@torch.no_grad()
def save_recon_grid(path: str | Path, model: ConvVAE, images: np.ndarray, names: list[str], n: int = 8) -> None:
    """A PNG of ``n`` CT slices (top row) above their reconstructions from mu (bottom row).

    The slices are evenly spaced through the corpus, so the grid spans every series."""
    import matplotlib  # here, not at the top: only the grid needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = np.linspace(0, len(images) - 1, min(n, len(images))).round().astype(int)
    device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(images[idx], dtype=np.float32)).unsqueeze(1).to(device)
    mu, _ = model.encode(x)
    rec = model.decode(mu).cpu().numpy()[:, 0]
    fig, axes = plt.subplots(2, len(idx), figsize=(1.6 * len(idx), 3.6), squeeze=False)
    for j, i in enumerate(idx):
        for row, img in enumerate((images[i], rec[j])):
            ax = axes[row, j]
            ax.imshow(img, cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, j].set_title(names[i].replace("/", "\n"), fontsize=6)
    axes[0, 0].set_ylabel("input", fontsize=8)
    axes[1, 0].set_ylabel("reconstruction", fontsize=8)
    fig.suptitle("CT VAE: windowed CT slices and their reconstructions (decoded mu)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
