"""Applying a trained detector: per-type probability maps, slice scores, masks, features."""

from __future__ import annotations

import numpy as np
import torch

BATCH = 64


def _batches(model, images: np.ndarray, fn):
    images = np.asarray(images, np.float32)
    if images.ndim != 3:
        raise ValueError(f"images must be (N, S, S), got {images.shape}")
    out = []
    with torch.no_grad():
        for start in range(0, len(images), BATCH):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + BATCH]))[:, None]
            out.append(fn(model, x).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0,))


def detector_probabilities(model, images: np.ndarray) -> np.ndarray:
    """(N, T + 1, S, S) class probabilities (softmax; channel 0 background) of (N, S, S) images."""
    return _batches(model.eval(), images, lambda m, x: m(x).softmax(1)).astype(np.float32)


def scores_from_probabilities(prob: np.ndarray, topk: int) -> np.ndarray:
    """(N, T) per-type presence scores: mean of the ``topk`` largest probabilities of each type's map.

    A mean of a few pixels rather than the maximum: one hot pixel of noise should not decide,
    while a small defect (a 64 px crack covers 2-14 pixels) still fills the top-k.
    """
    flat = prob[:, 1:].reshape(prob.shape[0], prob.shape[1] - 1, -1)
    k = min(topk, flat.shape[-1])
    return np.sort(flat, axis=-1)[..., -k:].mean(-1)


def detector_scores(model, images: np.ndarray) -> np.ndarray:
    """(N, T) per-type presence scores in [0, 1] of (N, S, S) images (see :func:`scores_from_probabilities`)."""
    return scores_from_probabilities(detector_probabilities(model, images), model.topk)


def detector_masks(model, images: np.ndarray) -> np.ndarray:
    """(N, S, S) uint8 predicted label maps (argmax class: 0 background, t + 1 for type t)."""
    return detector_probabilities(model, images).argmax(1).astype(np.uint8)


def detector_features(model, images: np.ndarray) -> np.ndarray:
    """(N, D) pooled bottleneck activations (D = ``model.feature_dim``): the domain features."""
    return _batches(model.eval(), images, lambda m, x: m.features(x)).astype(np.float64)
