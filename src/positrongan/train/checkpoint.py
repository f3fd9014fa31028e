"""Training checkpoints: everything needed to continue exactly where a run stopped.

A checkpoint holds the networks, optimisers, the step, the accumulated wall-clock training
time, the loss rows so far and the torch RNG state, so the step after a resume is the step
an uninterrupted run would have taken. It also holds a fingerprint of what the run depends
on (method, options, data); a checkpoint with another fingerprint is not resumed from.
Written atomically, read with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ArtifactError, PositronganError
from ..io import atomic_path, load_torch

log = logging.getLogger(__name__)

# Options that do not change what a step computes: a run may continue under new values.
RESUMABLE_KEYS = ("iterations", "checkpoint_every", "sample_every", "methods")


class TrainingError(PositronganError):
    """Training cannot continue (e.g. a non-finite loss); the message names the checkpoint kept."""


def fingerprint(
    method: str,
    train_cfg: dict,
    *arrays: np.ndarray,
    seed: int | None = None,
    resumable: tuple[str, ...] = RESUMABLE_KEYS,
) -> str:
    """A hash of the method, the seed, the options a step depends on and the training data.

    Params:
        method: the method name.
        train_cfg: its config section; the keys in ``resumable`` are left out.
        arrays: the data the run depends on.
        seed: the run's seed (another seed is another run).
        resumable: keys that do not change what a step computes.
    Returns:
        A hex digest.
    """
    h = hashlib.sha256()
    opts = {k: v for k, v in train_cfg.items() if k not in resumable}
    h.update(json.dumps([method, opts, seed], sort_keys=True).encode())
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write a checkpoint (or generator.pt) atomically: an interrupted write leaves the previous one."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, expected_fingerprint: str) -> dict[str, Any] | None:
    """Read a checkpoint to resume from, or None when there is none or it belongs to another run.

    Params:
        path: the checkpoint file.
        expected_fingerprint: :func:`fingerprint` of the run about to start.
    Returns:
        The state dict, or None (logged) when absent, from a different configuration, or from a
        version of this package whose checkpoints had no fingerprint.
    Raises:
        ArtifactError: the file exists but cannot be read.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = load_torch(path, required=("step",), what="training checkpoint")
    except ArtifactError as exc:
        raise ArtifactError(f"{exc}; delete it to start training from scratch") from None
    if state.get("fingerprint") != expected_fingerprint:
        log.info("%s is from a different configuration, seed or data set: starting from scratch", path)
        return None
    return state
