"""The training loop shared by every method, the CT VAE included: budget, seeding,
checkpoints and resume, non-finite loss guard, loss log, sample grids and wall-clock time.

A method is a :class:`Trainer`: its networks and optimisers by name, ``step(real)`` (one
generator update, including whatever discriminator/critic updates precede it) and
``sample(n, generator)``. The loop owns everything else, so the budget (``iterations``
generator updates) and the bookkeeping are the same for every method. Methods are listed
once, in :mod:`positrongan.train.registry`.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..io import atomic_path, write_text
from ..runtime import progress
from .checkpoint import RESUMABLE_KEYS, TrainingError, fingerprint, load_checkpoint, save_checkpoint
from .graphs import GraphedStep

log = logging.getLogger(__name__)


def autocast_for(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when asked and supported (no loss scaling needed); else nothing."""
    if enabled and device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            log.info("mixed precision: bf16 autocast on %s", device)
            return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
        log.info("mixed precision off: this GPU has no bf16 support")
    return nullcontext


class Trainer:
    """One method's networks and update rule. Subclasses set ``nets``, ``opts`` and
    implement :meth:`step`, :meth:`sample`, :meth:`export`, and for sampling from
    ``generator.pt`` :meth:`network` and :meth:`draw`. Registered in
    :mod:`positrongan.train.registry`."""

    method: str = ""
    nets: dict[str, nn.Module]
    opts: dict[str, torch.optim.Optimizer]
    autocast = staticmethod(nullcontext)
    # Real batches one step consumes (WGAN-GP: n_critic): the ``images`` budget divides by it so
    # every method's discriminator sees the same number of real images.
    real_batches_per_step: int = 1
    # Whether ``step`` may be captured as a CUDA graph (``training.cuda_graphs``): no host reads,
    # fixed shapes. Set by the methods whose step was checked on a GPU.
    graphable: bool = False
    # Config keys that do not change what a step computes: a run may resume under new values.
    resumable: tuple[str, ...] = RESUMABLE_KEYS

    @classmethod
    def build(
        cls,
        images: torch.Tensor,
        tcfg: dict,
        device: torch.device,
        memory: torch.Tensor | None = None,
        latents: nn.Module | None = None,
    ) -> Trainer:
        """The trainer for ``images`` (N, 1, S, S) under the ``training`` section ``tcfg``.
        ``memory`` and ``latents`` are given to the methods that declare ``memory`` in the
        registry. Seed torch before calling: it initialises the networks."""
        return cls(images.shape[-1], tcfg, device)

    @staticmethod
    def network(hparams: dict) -> nn.Module:
        """The network that :meth:`export` wrote, rebuilt from its ``hparams`` (no weights)."""
        raise NotImplementedError

    @staticmethod
    def draw(net: nn.Module, n: int, generator: torch.Generator, z: torch.Tensor | None = None) -> torch.Tensor:
        """n images (n, 1, S, S) in [-1, 1] from the exported network ``net`` (eval mode),
        every random number from ``generator``; ``z``: queries from the CT latents, for the
        methods with a memory (None: the prior N(0, I))."""
        raise NotImplementedError

    def step(self, real: torch.Tensor) -> dict[str, torch.Tensor | float]:
        """One generator update on a real batch (B, 1, S, S) in [-1, 1]. Returns named losses,
        as detached 0-d tensors (the loop moves them to the host once per checkpoint interval,
        so a GPU step needs no host sync) or floats."""
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n images (n, 1, S, S) in [-1, 1], drawn with ``generator`` (the training RNG untouched)."""
        raise NotImplementedError

    def export(self) -> dict[str, Any]:
        """What generator.pt holds besides the bookkeeping: ``hparams`` and ``state_dict``."""
        raise NotImplementedError

    def batch(self, images: torch.Tensor, size: int, step: int) -> torch.Tensor:
        """The real batch of update ``step`` (0-based): ``size`` images drawn with replacement
        from torch's (checkpointed) RNG."""
        return images[torch.randint(images.shape[0], (size,), device=images.device)]

    def write_grid(self, path: Path, generator: torch.Generator) -> None:
        """The PNG written every ``sample_every`` updates: 64 samples."""
        save_grid(self.sample(64, generator), path)

    def after_step(self) -> None:
        """Hook after each update (EMA)."""

    def state(self) -> dict[str, Any]:
        """Extra trainer state for the checkpoint (e.g. the EMA copy)."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`."""

    def capacity(self) -> dict[str, int]:
        """Trainable parameters of the generator (``G``: everything sampling needs, e.g. W_a)
        and of the discriminator/critic (``D``; 0 for the VAE and the diffusion model)."""
        count = {k: sum(p.numel() for p in net.parameters()) for k, net in self.nets.items()}
        return {"G": count.get("G", 0) + count.get("encoder", 0), "D": count.get("D", 0)}

    def summary(self) -> dict[str, float]:
        """Scalars about the trained networks written into generator.pt (e.g. the attention's
        effective number of slots); none by default."""
        return {}


def fast_device_setup(trainer: Trainer, tcfg: dict, device: torch.device) -> None:
    """GPU speed options that do not change what a step computes: channels_last memory format
    for the convolution networks, and ``training.compile`` (torch.compile, CUDA only). Called by
    the GAN trainers after building their networks; a no-op on the CPU."""
    if device.type != "cuda":
        return
    for net in trainer.nets.values():
        net.to(memory_format=torch.channels_last)
    if tcfg.get("compile"):
        trainer.compiled = {k: torch.compile(v) for k, v in trainer.nets.items()}


def adam(params, lr: float, betas, device: torch.device) -> torch.optim.Adam:
    """Adam, fused into one kernel per step on CUDA (the same update; only the rounding order differs)."""
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), fused=device.type == "cuda")


def _host(losses: dict[str, torch.Tensor | float]) -> dict[str, float]:
    # Integers (e.g. the CT VAE's epoch) stay integers in losses.csv.
    return {k: v if isinstance(v, int) else float(v) for k, v in losses.items()}


def budget_updates(trainer: Trainer, train_cfg: dict) -> int:
    """The number of steps the run makes: ``iterations``, or under ``budget: images`` the steps
    after which the discriminator has seen ``iterations`` real batches (ceil)."""
    iterations = train_cfg["iterations"]
    if train_cfg.get("budget", "updates") == "images":
        return max(1, math.ceil(iterations / trainer.real_batches_per_step))
    return iterations


@dataclass
class Outputs:
    """Where one training run writes."""

    generator: Path
    checkpoint: Path
    losses: Path
    samples: Path


class LossLog:
    """``losses.csv``: one row per update, appended a block of rows per tick (checkpoint).

    The file always starts as the log of the checkpoint resumed from (those rows are also in
    the checkpoint, since Snakemake removes an output before rerunning its job), so a resume
    neither repeats the rows computed after that checkpoint nor loses the ones before it.

    Params:
        path: the CSV.
        rows: the rows of the checkpoint resumed from ([] for a fresh run).
    """

    def __init__(self, path: Path, rows: list[dict[str, float]]):
        self.path = Path(path)
        self.rows = list(rows)
        self._written = len(self.rows)
        self._keys = list(self.rows[0]) if self.rows else []
        if self.rows:
            write_text(self.path, self._csv(self.rows, header=True))
        else:  # a fresh run: the log of an older run goes; the first flush starts a new one
            self.path.unlink(missing_ok=True)

    def _csv(self, rows: list[dict[str, float]], header: bool) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self._keys, lineterminator="\n")
        if header:
            writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()

    def append(self, row: dict[str, float]) -> None:
        """Add one row (in memory until the next :meth:`flush`)."""
        if not self._keys:
            self._keys = list(row)
        self.rows.append(row)

    def flush(self) -> None:
        """Append the rows not yet in the file."""
        new = self.rows[self._written :]
        if not new:
            return
        header = self._written == 0
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(self._csv(new, header))
        self._written = len(self.rows)


def save_grid(images: torch.Tensor, path: Path, nrow: int = 8) -> None:
    """Write images (n, 1, S, S) in [-1, 1] as one PNG grid with a 2 px white border."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[:, 0].numpy()
    n, s, _ = x.shape
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    pad = 2
    grid = np.full((rows * (s + pad) + pad, cols * (s + pad) + pad), 255, dtype=np.uint8)
    for i, img in enumerate(x):
        r, c = divmod(i, cols)
        grid[pad + r * (s + pad) : pad + r * (s + pad) + s, pad + c * (s + pad) : pad + c * (s + pad) + s] = img
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")


def _all_finite(trainer: Trainer) -> bool:
    return all(
        torch.isfinite(p).all()
        for net in trainer.nets.values()
        for p in net.state_dict().values()
        if p.is_floating_point()
    )


def train(
    trainer: Trainer,
    images: torch.Tensor,
    train_cfg: dict,
    out: Outputs,
    seed: int,
    data_fingerprint: tuple[np.ndarray, ...] = (),
) -> dict[str, Any]:
    """Run (or resume) training to ``train_cfg['iterations']`` generator updates.

    Params:
        trainer: the method.
        images: (N, 1, S, S) training images in [-1, 1] on the trainer's device.
        train_cfg: the config section of the method (``training``, or ``vae`` for the CT VAE):
            ``iterations``, ``batch_size``, ``checkpoint_every`` and ``sample_every`` set the
            loop; every key but ``trainer.resumable`` is part of the run's fingerprint.
        out: output paths.
        seed: the run's seed (batches, noise, augmentation all come from torch's RNG).
        data_fingerprint: arrays the run depends on besides ``images`` (e.g. the memory).
    Returns:
        The generator.pt blob that was written.
    Raises:
        TrainingError: a non-finite loss; the last good checkpoint stays at ``out.checkpoint``.
    """
    iterations = budget_updates(trainer, train_cfg)
    batch = train_cfg["batch_size"]
    fp = fingerprint(
        trainer.method, train_cfg, images.cpu().numpy(), *data_fingerprint, seed=seed, resumable=trainer.resumable
    )
    torch.manual_seed(seed)
    step, seconds, rows = 0, 0.0, []
    state = load_checkpoint(out.checkpoint, fp)
    if state is not None and state["step"] > iterations:
        log.info("checkpoint is at step %d, beyond the budget of %d: starting from scratch", state["step"], iterations)
        state = None
    if state is not None:
        for name, net in trainer.nets.items():
            net.load_state_dict(state["nets"][name])
        for name, opt in trainer.opts.items():
            opt.load_state_dict(state["opts"][name])
        trainer.load_state(state["trainer"])
        torch.set_rng_state(state["rng"])
        if torch.cuda.is_available() and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        step, seconds, rows = state["step"], state["train_seconds"], list(state["losses"])
        log.info("resumed %s from %s at step %d (%.1f s trained)", trainer.method, out.checkpoint, step, seconds)
    last_good = step if state is not None else None
    losses_log = LossLog(out.losses, rows)
    pending: list[dict[str, Any]] = []  # rows still holding device tensors

    grid_gen = torch.Generator(device=images.device).manual_seed(seed ^ 0x5A17)
    grid_seed = grid_gen.initial_seed()

    def write_grid() -> None:
        trainer.write_grid(out.samples, torch.Generator(device=images.device).manual_seed(grid_seed))

    def sync() -> None:
        # The one host sync per interval: the losses of the pending steps, checked for non-finite
        # values (the first bad step is the one reported, whatever came after it).
        for row in pending:
            host = {"step": row["step"], **_host(row["losses"]), "seconds": row["seconds"]}
            losses_log.append(host)
            bad = {k: v for k, v in host.items() if not math.isfinite(v)}
            if bad:
                pending.clear()
                losses_log.flush()
                raise TrainingError(
                    f"{trainer.method}: non-finite loss {bad} at step {host['step']}; training stopped, "
                    f"{_kept(out.checkpoint, last_good)}"
                )
        pending.clear()

    def checkpoint() -> None:
        nonlocal last_good
        if not _all_finite(trainer):
            raise TrainingError(
                f"{trainer.method}: non-finite weights at step {step}; {_kept(out.checkpoint, last_good)}"
            )
        save_checkpoint(
            out.checkpoint,
            {
                "step": step,
                "train_seconds": seconds,
                "fingerprint": fp,
                "method": trainer.method,
                "nets": {k: v.state_dict() for k, v in trainer.nets.items()},
                "opts": {k: v.state_dict() for k, v in trainer.opts.items()},
                "trainer": trainer.state(),
                "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "losses": losses_log.rows,
            },
        )
        losses_log.flush()
        last_good = step

    bar_total = iterations - step
    step_fn = None  # trainer.step, or its CUDA graph (captured at the first step)
    with progress(total=bar_total, desc=f"train {trainer.method}", unit="it") as bar:
        while step < iterations:
            t0 = time.perf_counter()
            real = trainer.batch(images, batch, step)
            if step_fn is None:
                wanted = bool(train_cfg.get("cuda_graphs"))
                graphs = wanted and real.device.type == "cuda" and trainer.graphable
                if wanted and not graphs:
                    why = "not a CUDA device" if real.device.type != "cuda" else "a step not checked for capture"
                    log.info("training.cuda_graphs: %s trains without it on %s (%s)", trainer.method, real.device, why)
                step_fn = GraphedStep(trainer, real) if graphs else trainer.step
            losses = step_fn(real)
            trainer.after_step()
            step += 1
            seconds += time.perf_counter() - t0
            pending.append(
                {"step": step, "losses": {k: _detach(v) for k, v in losses.items()}, "seconds": round(seconds, 4)}
            )
            bar.update(1)
            if step % train_cfg["checkpoint_every"] == 0 or step == iterations:
                if images.device.type == "cuda":  # GPU work is asynchronous: wait for it before timing
                    t1 = time.perf_counter()
                    torch.cuda.synchronize(images.device)
                    seconds += time.perf_counter() - t1
                sync()
                checkpoint()
            if step % train_cfg["sample_every"] == 0 or step == iterations:
                write_grid()
    if bar_total == 0:  # resumed from a finished run: its outputs are written all the same
        write_grid()
    log.info(
        "%s: %d generator updates in %.1f s (%.3f s/it)",
        trainer.method,
        iterations,
        seconds,
        seconds / max(1, len(losses_log.rows)),
    )
    capacity = trainer.capacity()
    blob = {
        "variant": trainer.method,
        **trainer.export(),
        "method": trainer.method,
        "iterations": iterations,
        "train_seconds": seconds,
        "image_size": int(images.shape[-1]),
        "n_train_images": int(images.shape[0]),
        # The budget as the discriminator saw it: steps x real batches per step x batch size.
        "real_images_seen": int(iterations * trainer.real_batches_per_step * batch),
        "g_params": int(capacity["G"]),
        "d_params": int(capacity["D"]),
        **{k: float(v) for k, v in trainer.summary().items()},
    }
    save_checkpoint(out.generator, blob)
    return blob


def _detach(value):
    return value.detach() if isinstance(value, torch.Tensor) else value


def _kept(path: Path, step: int | None) -> str:
    if step is None:
        return "no checkpoint had been written yet (lower the learning rate or check the data)"
    return f"the last good checkpoint (step {step}) is kept in {path}; rerunning resumes from it"
