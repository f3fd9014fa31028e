"""Read and check the evaluation inputs: the real dataset and each method's samples."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.positron import load_dataset
from ..errors import ArtifactError, ConfigError
from ..io import load_npz

log = logging.getLogger(__name__)


@dataclass
class MethodSamples:
    """One method's generated images and its cost figures (from ``samples/{method}.npz``)."""

    method: str
    images: np.ndarray
    train_seconds: float | None
    samples_per_second: float | None
    path: Path


def _check_images(images: np.ndarray, path: Path, what: str) -> np.ndarray:
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise ArtifactError(f"{path}: '{what}' must have shape (N, S, S), got {images.shape}")
    images = images.astype(np.float32, copy=False)
    if not np.isfinite(images).all():
        raise ArtifactError(f"{path}: '{what}' contains NaN or infinite values")
    lo, hi = float(images.min(initial=0.0)), float(images.max(initial=0.0))
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ArtifactError(
            f"{path}: '{what}' must lie in [0, 1] (the dataset's normalisation), found [{lo:.3g}, {hi:.3g}]"
        )
    return np.clip(images, 0.0, 1.0)


def load_real(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Training and held-out test images of ``dataset/positron.npz`` (read by :func:`load_dataset`).

    Returns:
        (train (M, S, S), test (N, S, S)) float32 in [0, 1].
    Raises:
        ArtifactError: naming the file when it is missing, malformed, or a split is too small.
    """
    path = Path(path)
    data = load_dataset(path)
    images, split = data["images"], data["split"]
    train, test = images[split == "train"], images[split == "test"]
    if len(test) < 2:
        raise ArtifactError(
            f"{path}: {len(test)} test image(s); evaluation needs at least 2 held-out real images "
            "(more scans, or a larger test fraction in dataset.split)"
        )
    if len(train) < 1:
        raise ArtifactError(f"{path}: no training images (split == 'train')")
    log.info("real images from %s: %d train, %d test, %d px", path, len(train), len(test), images.shape[-1])
    return train, test


def _scalar(data: dict, key: str) -> float | None:
    if key not in data:
        return None
    value = float(np.asarray(data[key]).reshape(-1)[0])
    return value if np.isfinite(value) else None


def load_samples(paths: list[str | Path], methods: list[str], size: int, limit: int) -> list[MethodSamples]:
    """Each method's samples, in ``training.methods`` order.

    Params:
        paths: ``samples/{method}.npz`` files.
        methods: ``training.methods``; every one needs a file, and no file may hold another.
        size: image side of the real dataset (the samples must match it).
        limit: ``evaluation.samples``; larger files are cut to their first ``limit`` images.
    Returns:
        List of MethodSamples.
    Raises:
        ArtifactError: a file is missing, malformed or of the wrong size (naming it).
        ConfigError: the files and ``training.methods`` do not match.
    """
    found: dict[str, MethodSamples] = {}
    for path in map(Path, paths):
        data = load_npz(path, required=("images", "method"))
        method = str(np.asarray(data["method"]).reshape(-1)[0])
        images = _check_images(data["images"], path, "images")
        if images.shape[-1] != size:
            raise ArtifactError(f"{path}: samples are {images.shape[-1]} px but the real images are {size} px")
        if len(images) < 2:
            raise ArtifactError(f"{path}: {len(images)} sample(s); at least 2 are needed")
        if method not in methods:
            raise ConfigError(
                f"{path} holds method '{method}', which is not in config key 'training.methods' = {methods}"
            )
        if method in found:
            raise ArtifactError(f"{path}: method '{method}' also comes from {found[method].path}")
        if len(images) > limit:
            log.info("%s: using the first %d of %d samples (evaluation.samples)", path, limit, len(images))
            images = images[:limit]
        elif len(images) < limit:
            log.warning(
                "%s: only %d samples (evaluation.samples = %d); N is stated in the table", path, len(images), limit
            )
        found[method] = MethodSamples(
            method, images, _scalar(data, "train_seconds"), _scalar(data, "samples_per_second"), path
        )
    missing = [m for m in methods if m not in found]
    if missing:
        raise ConfigError(
            f"config key 'training.methods' lists {missing} but no samples file was given for them "
            f"(expected samples/<method>.npz)"
        )
    return [found[m] for m in methods]
