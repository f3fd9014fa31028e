"""Training, saving and loading the defect detector.

Training data: reference-count slices (``images``) of the training scans and their per-pixel
defect type labels (``defect_labels``). Loss: class-weighted cross-entropy (defect pixels are
under 1 % of a slice; each defect class is weighted by sqrt(background frequency / its
frequency), capped at ``MAX_CLASS_WEIGHT``) plus the soft Dice of the defect classes; AdamW
with cosine decay. Each batch is shown in one of the 8 dihedral orientations (the tube's
section has no preferred direction), optionally with a random gain per slice. Model selection:
after every epoch the mean over defect types of the slice-level AUC on the validation scans
(type-t slices against defect-free slices); the best epoch is kept.
Everything is seeded, on one thread, so the same seed gives the same weights on a CPU.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ArtifactError
from ..geometry.phantom import DEFECT_LABELS
from ..io import atomic_path, load_torch
from ..runtime import progress
from .unet import SmallUNet

log = logging.getLogger(__name__)

# Defect types in label order (label = index + 1); class 0 is background.
TYPES: tuple[str, ...] = tuple(sorted(DEFECT_LABELS, key=DEFECT_LABELS.get))
MAX_CLASS_WEIGHT = 30.0
FORMAT = "positrongan-detector-1"


def class_weights(labels: np.ndarray, classes: int) -> torch.Tensor:
    """Cross-entropy weights: sqrt(background / class pixel frequency), capped; 1 for background
    and for classes absent from the training labels."""
    counts = np.bincount(labels.ravel(), minlength=classes).astype(np.float64)
    w = np.ones(classes)
    for c in range(1, classes):
        if counts[c] > 0:
            w[c] = min(MAX_CLASS_WEIGHT, np.sqrt(counts[0] / counts[c]))
    return torch.tensor(w, dtype=torch.float32)


def _dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """One of the 8 symmetries of the square (k in 0..7) on the last two axes."""
    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if k >= 4 else x


def _soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean soft Dice of the defect classes present in the batch (background excluded)."""
    prob = logits.softmax(1)[:, 1:]
    onehot = nn.functional.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].float()
    present = onehot.sum(dim=(0, 2, 3)) > 0
    if not present.any():
        return logits.new_zeros(())
    inter = (prob * onehot).sum(dim=(0, 2, 3))
    denom = prob.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    d = (2 * inter + 1.0) / (denom + 1.0)
    return 1 - d[present].mean()


def _val_score(model: SmallUNet, images: np.ndarray, labels: np.ndarray, topk: int) -> float:
    """Mean over defect types (with validation positives) of the slice AUC against defect-free slices."""
    from .infer import detector_scores
    from .scoring import roc_auc

    scores = detector_scores(model, images)
    flat = labels.reshape(len(labels), -1)
    free = ~(flat > 0).any(1)
    aucs = []
    for t in range(len(TYPES)):
        has = (flat == t + 1).any(1)
        if has.any() and free.any():
            aucs.append(roc_auc(scores[has, t], scores[free, t]))
    return float(np.mean(aucs)) if aucs else float("nan")


SETTINGS = ("batch_size", "learning_rate", "weight_decay", "gain_jitter", "width", "topk")


def settings_of(dcfg: dict) -> dict:
    """The keyword arguments of :func:`train_detector` that the ``detection`` section sets."""
    return {k: dcfg[k] for k in SETTINGS}


def train_detector(
    images: np.ndarray,
    labels: np.ndarray,
    val_images: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
    *,
    epochs: int = 30,
    batch_size: int = 16,
    learning_rate: float = 2e-3,
    weight_decay: float = 1e-4,
    gain_jitter: float = 0.0,
    width: int = 8,
    levels: int = 3,
    topk: int = 4,
    seed: int = 0,
    types: tuple[str, ...] = TYPES,
    val_every: int = 1,
) -> tuple[SmallUNet, dict]:
    """Train the detector on reference-count slices.

    Params:
        images: (N, S, S) training slices in [0, 1].
        labels: (N, S, S) integer type labels (0 background, t + 1 for ``types[t]``).
        val_images, val_labels: validation slices for model selection (None: keep the last epoch).
        epochs: passes over the training slices.
        batch_size: slices per step.
        learning_rate: AdamW step size (cosine decay to zero).
        weight_decay: AdamW decoupled weight decay.
        gain_jitter: augmentation gain range g (each slice times U(1 - g, 1 + g)); 0 off.
        width: U-Net width of the first level.
        levels: U-Net down-sampling steps (S must be divisible by 2**levels).
        topk: pixels averaged for a slice's per-type score.
        seed: seeds the initialisation, the batch order and the orientations.
        types: the defect type names (label order).
        val_every: epochs between validation scores (and the last epoch); only scored epochs
            can be chosen. More than 1 when the epochs are short (a few slices for many epochs).
    Returns:
        (model in eval mode with ``topk`` and ``types`` attributes, metadata dict with the
        per-epoch history, the chosen epoch and its validation score).
    """
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels, np.int64)
    if images.ndim != 3 or images.shape != labels.shape:
        raise ValueError(f"images {images.shape} and labels {labels.shape} must both be (N, S, S)")
    size = images.shape[-1]
    if size % 2**levels:
        raise ValueError(f"image size {size} is not divisible by 2**levels = {2**levels}")
    classes = len(types) + 1
    if labels.min() < 0 or labels.max() >= classes:
        raise ValueError(f"labels must lie in 0..{classes - 1} (background + {len(types)} types)")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = SmallUNet(classes, width=width, levels=levels)
    model.topk, model.types = int(topk), tuple(types)
    opt = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    # Cosine decay to zero: the late epochs change the weights little, so the validation choice
    # among them is less a draw from optimiser noise.
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    ce = nn.CrossEntropyLoss(weight=class_weights(labels, classes))
    x_all = torch.from_numpy(images)[:, None]
    y_all = torch.from_numpy(labels)
    history, best, best_state, best_epoch = [], -np.inf, None, 0
    t0 = time.perf_counter()
    bar = progress(range(epochs), desc="detector", unit="epoch")
    for epoch in bar:
        model.train()
        order = rng.permutation(len(images))
        losses = []
        for start in range(0, len(order), batch_size):
            idx = torch.from_numpy(order[start : start + batch_size])
            k = int(rng.integers(8))
            x, y = _dihedral(x_all[idx], k), _dihedral(y_all[idx], k)
            if gain_jitter > 0:
                # Each slice's own percentile scaling varies with its hottest voxels: a random gain
                # keeps the detector from keying on a scan's overall brightness.
                gain = 1 + gain_jitter * (2 * torch.from_numpy(rng.random(len(idx))).float() - 1)
                x = x * gain[:, None, None, None]
            logits = model(x)
            loss = ce(logits, y) + _soft_dice_loss(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        sched.step()
        model.eval()
        scored = val_images is not None and ((epoch + 1) % val_every == 0 or epoch + 1 == epochs)
        if val_images is not None and not scored:
            history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_mean_auc": None})
            continue
        val = _val_score(model, val_images, val_labels, topk) if scored else float("nan")
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_mean_auc": val})
        # Without a validation score (no validation slices, or none with a defect) the last epoch is kept.
        if (np.isfinite(val) and val > best) or (not np.isfinite(val) and not np.isfinite(best)):
            best, best_state, best_epoch = val, copy.deepcopy(model.state_dict()), epoch + 1
    model.load_state_dict(best_state)
    model.eval()
    meta = {
        "epochs": epochs,
        "chosen_epoch": best_epoch,
        "val_mean_auc": float(best) if np.isfinite(best) else None,
        "history": history,
        "train_slices": int(len(images)),
        "val_slices": int(len(val_images)) if val_images is not None else 0,
        "seconds": time.perf_counter() - t0,
        "seed": int(seed),
        "parameters": int(sum(p.numel() for p in model.parameters())),
    }
    log.info(
        "detector: %d parameters, %d epochs in %.1f s; chose epoch %d (val mean AUC %.3f)",
        meta["parameters"],
        epochs,
        meta["seconds"],
        best_epoch,
        best,
    )
    return model, meta


def fit_thresholds(model: SmallUNet, images: np.ndarray, labels: np.ndarray, fp_rate: float) -> np.ndarray:
    """Per-type thresholds flagging at most ``fp_rate`` of the defect-free slices among ``images``.

    Params:
        model: the detector.
        images: (N, S, S) slices (the validation scans at reference counts).
        labels: (N, S, S) their type labels; only the defect-free slices are used.
        fp_rate: allowed false-positive fraction.
    Returns:
        (T,) thresholds (a type is found when its score exceeds its threshold).
    Raises:
        ValueError: no defect-free slice among ``images``.
    """
    from .infer import detector_scores
    from .scoring import threshold_at_fp

    free = ~(np.asarray(labels).reshape(len(labels), -1) > 0).any(1)
    if not free.any():
        raise ValueError("no defect-free slices to fix the detector's thresholds on")
    scores = detector_scores(model, np.asarray(images)[free])
    return np.array([threshold_at_fp(scores[:, t], fp_rate) for t in range(scores.shape[1])])


def save_detector(path: str | Path, model: SmallUNet, meta: dict) -> None:
    """Write the detector (weights, architecture, ``topk``, types, metadata) atomically."""
    blob = {
        "format": FORMAT,
        "state_dict": model.state_dict(),
        "arch": {"classes": len(model.types) + 1, "width": model.down[0][0].out_channels, "levels": model.levels},
        "topk": int(model.topk),
        "types": list(model.types),
        "meta": meta,
    }
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def load_detector(path: str | Path) -> SmallUNet:
    """Read a detector written by :func:`save_detector` (eval mode; ``meta`` attribute holds its metadata).

    Raises:
        ArtifactError: naming the file when it is missing, corrupt or not a detector.
    """
    blob = load_torch(path, ("format", "state_dict", "arch", "topk", "types"), what="detector file")
    if blob["format"] != FORMAT:
        raise ArtifactError(f"{path}: detector format {blob['format']!r}, expected {FORMAT!r}")
    model = SmallUNet(**blob["arch"])
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        raise ArtifactError(f"{path}: weights do not match the stored architecture ({exc})") from None
    model.topk, model.types, model.meta = int(blob["topk"]), tuple(blob["types"]), blob.get("meta", {})
    thresholds = model.meta.get("thresholds")
    # Per-type thresholds fixed at training time (``fit_thresholds``); None for a bare model.
    model.thresholds = None if thresholds is None else np.asarray(thresholds, np.float64)
    return model.eval()
