"""Reading the positron training images and the CT latents for training."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ArtifactError
from ..io import load_npz


def training_images(path: str | Path, split: str = "train") -> np.ndarray:
    """The ``split`` images of ``dataset/positron.npz``.

    Params:
        path: the dataset artifact.
        split: which split.
    Returns:
        (N, S, S) float32 in [0, 1].
    Raises:
        ArtifactError: missing keys, no image in the split, wrong shape or values out of [0, 1].
    """
    data = load_npz(path, required=("images", "split"))
    images, splits = data["images"], data["split"].astype(str)
    if images.ndim != 3 or images.shape[1] != images.shape[2] or len(splits) != len(images):
        raise ArtifactError(f"{path}: 'images' must be (N, S, S) with one 'split' entry per image, got {images.shape}")
    images = images[splits == split].astype(np.float32)
    if len(images) < 2:
        raise ArtifactError(f"{path}: {len(images)} image(s) in split '{split}'; training needs at least 2")
    if not np.isfinite(images).all() or images.min() < -1e-6 or images.max() > 1 + 1e-6:
        raise ArtifactError(f"{path}: images must be finite and in [0, 1] (found [{images.min()}, {images.max()}])")
    return np.clip(images, 0.0, 1.0)


def ct_latents(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(mu, logvar), each (N, d), from ``vae/latents.npz``, checked."""
    data = load_npz(path, required=("mu", "logvar"))
    mu, logvar = data["mu"].astype(np.float32), data["logvar"].astype(np.float32)
    if mu.ndim != 2 or mu.shape != logvar.shape or len(mu) == 0:
        raise ArtifactError(f"{path}: 'mu' and 'logvar' must be non-empty (N, d) arrays of one shape")
    if not (np.isfinite(mu).all() and np.isfinite(logvar).all()):
        raise ArtifactError(f"{path}: non-finite latents")
    return mu, logvar


def memory_vectors(path: str | Path) -> np.ndarray:
    """The memory (M, k) of ``features/positron_features.npz``, checked."""
    data = load_npz(path, required=("memory",))
    memory = data["memory"].astype(np.float32)
    if memory.ndim != 2 or len(memory) == 0 or not np.isfinite(memory).all():
        raise ArtifactError(f"{path}: 'memory' must be a finite, non-empty (M, k) array")
    return memory
