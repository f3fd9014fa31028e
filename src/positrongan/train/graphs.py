"""Whole-step CUDA graphs (``training.cuda_graphs``): one training step of a method (its
forwards, backwards and optimiser updates) captured once as a CUDA graph and then replayed.

Why: at the paper's scale ours launches about a thousand small kernels per step, and on the
GPU machines measured here the host cannot launch them as fast as the GPU runs them (the GPU
was busy 30 % of the wall time; ``docs/benchmarks.md``). A replay is one launch. What a step
computes is unchanged: the same kernels on the same tensors, in the same order, drawing from
the same CUDA random stream. Capturing needs a few eager warm-up steps (cuDNN and the caching
allocator settle there); the networks, the optimisers' state and the random state are put back
afterwards, so the warm-up steps leave no trace in the training run.

Limits (why it is an option, off by default): the real batch must have the same shape every
step (the loop's does), a step must not read a tensor on the host (none of ours, DCGAN's or
WGAN-GP's does), and the optimisers run with ``capturable=True`` (their step counters on the
device; the same update).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)

WARMUP_STEPS = 3  # eager steps before capture, undone afterwards (the PyTorch recipe uses 3)


def _snapshot(trainer) -> dict[str, Any]:
    """Copies of everything a step changes: weights, buffers (BatchNorm statistics), the
    optimisers' per-parameter state where it exists yet, and the random states."""
    return {
        "nets": {k: {n: t.detach().clone() for n, t in net.state_dict().items()} for k, net in trainer.nets.items()},
        "opts": {
            k: {id(p): {n: v.clone() if torch.is_tensor(v) else v for n, v in s.items()} for p, s in opt.state.items()}
            for k, opt in trainer.opts.items()
        },
        "cpu_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all(),
    }


@torch.no_grad()
def _restore(trainer, snap: dict[str, Any]) -> None:
    """Put :func:`_snapshot`'s values back *into the same tensors* (the graph holds their
    addresses); optimiser state created since is zeroed, which is what a fresh Adam holds."""
    for k, net in trainer.nets.items():
        for n, t in net.state_dict().items():
            t.copy_(snap["nets"][k][n])
    for k, opt in trainer.opts.items():
        saved = snap["opts"][k]
        for p, state in opt.state.items():
            for n, v in state.items():
                if torch.is_tensor(v):
                    v.copy_(saved[id(p)][n]) if id(p) in saved else v.zero_()
    torch.set_rng_state(snap["cpu_rng"])
    torch.cuda.set_rng_state_all(snap["cuda_rng"])


class GraphedStep:
    """``trainer.step`` as a CUDA graph. Call it as the step itself: it copies the real batch
    into the graph's input, replays, and returns copies of the step's losses (the graph
    overwrites its outputs on the next replay, and the loop reads them only at the next tick).

    Params:
        trainer: a :class:`~positrongan.train.loop.Trainer` on a CUDA device.
        real: the first real batch (its shape is every later batch's).
    """

    def __init__(self, trainer, real: torch.Tensor):
        if real.device.type != "cuda":
            raise ValueError("training.cuda_graphs needs the training images on a CUDA device")
        self.trainer = trainer
        for opt in trainer.opts.values():
            for group in opt.param_groups:
                group["capturable"] = True
            for state in opt.state.values():  # resumed runs: step counters onto the device
                if "step" in state and state["step"].device != real.device:
                    state["step"] = state["step"].to(real.device, torch.float32)
        # bf16 autocast caches weight casts across calls, which a capture must not rely on.
        autocast = trainer.autocast
        trainer.autocast = _uncached(autocast)
        self.real = real.detach().clone()
        snap = _snapshot(trainer)
        side = torch.cuda.Stream(real.device)
        side.wait_stream(torch.cuda.current_stream(real.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                trainer.step(self.real)
        torch.cuda.current_stream(real.device).wait_stream(side)
        _restore(trainer, snap)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.losses = trainer.step(self.real)
        log.info("%s: training step captured as a CUDA graph", trainer.method)

    def __call__(self, real: torch.Tensor) -> dict[str, torch.Tensor]:
        self.real.copy_(real)
        self.graph.replay()
        return {k: v.clone() if torch.is_tensor(v) else v for k, v in self.losses.items()}


def _uncached(autocast):
    """The trainer's autocast context factory with the weight-cast cache off (same casts,
    recomputed at each use); other contexts (no autocast) are returned unchanged."""

    def factory():
        ctx = autocast()
        if isinstance(ctx, torch.autocast):
            return torch.autocast(ctx.device, dtype=ctx.fast_dtype, cache_enabled=False)
        return ctx

    return factory
