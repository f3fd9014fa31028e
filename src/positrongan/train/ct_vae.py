"""Training loop of the CT VAE: Adam on the negative ELBO, checkpoints, exact resume.

Resume is exact because nothing random depends on history: the shuffle of epoch ``e`` is
drawn from (seed, e) and the reparameterisation noise of step ``s`` from (seed, s), and the
checkpoint holds the model (BatchNorm statistics included), Adam's moments, the step and the
loss log. So training 2n steps straight and n steps + resume + n steps give the same weights.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ArtifactError, ConfigError
from ..io import atomic_path
from ..models.vae import ConvVAE, vae_loss

log = logging.getLogger(__name__)

LOSS_COLUMNS = ("step", "epoch", "loss", "recon", "kl")
# Keys whose change makes an old checkpoint a different run; `epochs` is not among them,
# so resuming with more epochs extends a finished training.
_RUN_KEYS = ("latent_dim", "base_channels", "batch_size", "lr", "beta")


@dataclass
class VAETraining:
    """What a training run produced."""

    model: ConvVAE
    losses: list[dict]
    steps: int
    seconds: float  # wall time of the steps run in this call
    images_seen: int  # images processed in this call


def _step_seed(seed: int, *keys: int) -> int:
    return int(np.random.SeedSequence([seed % 2**63, *keys]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def _fingerprint(vae_cfg: Mapping, images: np.ndarray, seed: int) -> dict:
    import hashlib

    data = hashlib.sha256(np.ascontiguousarray(images, dtype=np.float32).tobytes()).hexdigest()[:16]
    return {
        **{k: vae_cfg[k] for k in _RUN_KEYS},
        "image_size": int(images.shape[-1]),
        "n_images": int(images.shape[0]),
        "data_sha256": data,
        "seed": seed,
    }


def save_checkpoint(path: str | Path, model: ConvVAE, opt: torch.optim.Optimizer, step: int, losses, run: dict) -> None:
    """Write the full training state atomically."""
    state = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": opt.state_dict(),
        "step": step,
        "hparams": dict(model.hparams),
        "run": run,
        "losses": [dict(r) for r in losses],
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (weights only, no pickled code)."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: file not found") from None
    except Exception as exc:  # noqa: BLE001 - zip, pickle and runtime errors all mean "corrupt" here
        raise ArtifactError(f"{path}: not a readable checkpoint ({exc})") from None
    need = {"model", "optimizer", "step", "hparams", "run", "losses"}
    if not isinstance(state, dict) or not need <= set(state):
        raise ArtifactError(f"{path}: not a VAE training checkpoint (expected keys {sorted(need)})")
    return state


def train_vae(
    images: np.ndarray,
    vae_cfg: Mapping,
    seed: int,
    device: torch.device | str = "cpu",
    checkpoint: str | Path | None = None,
    resume: bool = False,
) -> VAETraining:
    """Train a ConvVAE on images in [-1, 1].

    Params:
        images: (N, S, S) float32 in [-1, 1].
        vae_cfg: the ``vae`` config section (latent_dim, base_channels, epochs, batch_size, lr,
            beta, checkpoint_every).
        seed: seed of this run (model init, shuffles, reparameterisation noise).
        device: torch device.
        checkpoint: where to save the training state (every ``checkpoint_every`` steps and at
            the end); None saves nothing.
        resume: continue from ``checkpoint`` when it exists and comes from the same run (same
            VAE settings except ``epochs``, seed and images); a checkpoint of another run is
            ignored with a warning and overwritten.
    Returns:
        VAETraining with the model (eval mode), the per-step loss rows and timings.
    Raises:
        ConfigError: the loss became non-finite (the last good state is saved first).
    """
    device = torch.device(device)
    n, size = images.shape[0], images.shape[-1]
    if n == 0:
        raise ArtifactError("no CT images to train on")
    batch = min(int(vae_cfg["batch_size"]), n)
    steps_per_epoch = math.ceil(n / batch)
    total = steps_per_epoch * int(vae_cfg["epochs"])
    run = _fingerprint(vae_cfg, images, seed)

    torch.manual_seed(_step_seed(seed, 0))  # weight init
    model = ConvVAE(size, int(vae_cfg["latent_dim"]), int(vae_cfg["base_channels"])).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=float(vae_cfg["lr"]))
    losses: list[dict] = []
    step = 0
    if resume and checkpoint is not None and Path(checkpoint).exists():
        state = load_checkpoint(checkpoint)
        old = state["run"]
        if old != run:
            diff = ", ".join(f"{k}: {old.get(k)} -> {run[k]}" for k in sorted(run) if old.get(k) != run[k])
            log.warning("%s is from a different run (%s); training from scratch", checkpoint, diff)
        elif int(state["step"]) > total:
            log.warning(
                "%s is at step %d, beyond this run's %d steps; training from scratch", checkpoint, state["step"], total
            )
        else:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            step = int(state["step"])
            losses = [dict(r) for r in state["losses"]]
            log.info("resumed from %s at step %d of %d", checkpoint, step, total)

    data = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).unsqueeze(1)
    beta = float(vae_cfg["beta"])
    every = int(vae_cfg["checkpoint_every"])
    start = step
    from ..runtime import progress

    model.train()
    t0 = time.perf_counter()
    seen = 0
    bar = progress(total=total, initial=step, desc="CT VAE", unit="step")
    perm = None
    while step < total:
        epoch, pos = divmod(step, steps_per_epoch)
        if perm is None or pos == 0:
            perm = torch.from_numpy(np.random.default_rng(_step_seed(seed, 1, epoch)).permutation(n))
        x = data[perm[pos * batch : (pos + 1) * batch]].to(device, non_blocking=True)
        gen = torch.Generator(device=device).manual_seed(_step_seed(seed, 2, step))
        # The forward pass updates BatchNorm statistics; keep them so a bad step leaves the
        # last good state intact (they are tiny next to the weights).
        buffers = {k: v.clone() for k, v in model.named_buffers()}
        mu, logvar = model.encode(x)
        recon = model.decode(model.reparameterize(mu, logvar, gen))
        loss, rec, kl = vae_loss(recon, x, mu, logvar, beta)
        if not torch.isfinite(loss):
            with torch.no_grad():
                for k, v in model.named_buffers():
                    v.copy_(buffers[k])
            if checkpoint is not None:
                save_checkpoint(checkpoint, model, opt, step, losses, run)
            raise ConfigError(
                f"CT VAE loss became non-finite at step {step + 1}; the last good state is in "
                f"{checkpoint}; lower vae.lr (now {vae_cfg['lr']})"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        seen += x.shape[0]
        losses.append({"step": step, "epoch": epoch + 1, "loss": loss.item(), "recon": rec.item(), "kl": kl.item()})
        bar.update(1)
        if checkpoint is not None and (step % every == 0 or step == total):
            save_checkpoint(checkpoint, model, opt, step, losses, run)
    bar.close()
    seconds = time.perf_counter() - t0
    if step > start:
        log.info(
            "trained %d steps (%d images) in %.1f s: %.1f images/s; final loss %.2f (recon %.2f, KL %.2f)",
            step - start, seen, seconds, seen / max(seconds, 1e-9), losses[-1]["loss"], losses[-1]["recon"],
            losses[-1]["kl"],
        )  # fmt: skip
    if checkpoint is not None and step == start:
        save_checkpoint(checkpoint, model, opt, step, losses, run)  # nothing to do: rewrite as is
    return VAETraining(model.eval(), losses, step, seconds, seen)


def write_losses(path: str | Path, losses: list[dict]) -> None:
    """``losses.csv``: one row per optimiser step (columns LOSS_COLUMNS)."""
    from ..io import write_text

    lines = [",".join(LOSS_COLUMNS)]
    for r in losses:
        lines.append(f"{r['step']},{r['epoch']},{r['loss']:.6g},{r['recon']:.6g},{r['kl']:.6g}")
    write_text(path, "\n".join(lines) + "\n")


@torch.no_grad()
def save_recon_grid(path: str | Path, model: ConvVAE, images: np.ndarray, names: list[str], n: int = 8) -> None:
    """A PNG of ``n`` CT slices (top row) above their reconstructions from mu (bottom row).

    The slices are evenly spaced through the corpus, so the grid spans every series."""
    import matplotlib

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
