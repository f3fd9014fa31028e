"""Read and check the evaluation inputs: the real dataset and each method's samples."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.positron import load_dataset
from ..errors import ArtifactError, ConfigError
from ..io import load_npz

log = logging.getLogger(__name__)


@dataclass
class MethodSamples:
    """One (method, seed)'s generated images and cost figures (``samples/{method}_seed{seed}.npz``)."""

    method: str
    images: np.ndarray
    train_seconds: float | None
    samples_per_second: float | None
    path: Path
    seed: int = 0
    # Training facts carried by the samples file (capacity, budget, attention), for the table.
    info: dict[str, float] = field(default_factory=dict)


INFO_KEYS = (
    "real_images_seen",
    "g_params",
    "d_params",
    "n_train_images",
    "attention_slots",
    "attention_max",
    "memory_slots",
    "wa_change",
)


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


def split_half(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The held-out test images in two halves by scan (the split-half real floor).

    The test scans, sorted, go alternately to the two halves, so slices of one scan never sit
    on both sides; with a single test scan (or no scan ids) the images are halved in order.

    Returns:
        (half A (N_a, S, S), half B (N_b, S, S)) float32 in [0, 1], each with at least one image.
    """
    data = load_dataset(path)
    test = data["split"] == "test"
    images = data["images"][test]
    scans = data["scan"][test] if "scan" in data else None
    if scans is not None and len(set(scans)) >= 2:
        in_a = np.isin(scans, sorted(set(scans))[::2])
    else:
        in_a = np.arange(len(images)) < len(images) // 2
    return images[in_a], images[~in_a]


def _scalar(data: dict, key: str) -> float | None:
    if key not in data:
        return None
    value = float(np.asarray(data[key]).reshape(-1)[0])
    return value if np.isfinite(value) else None


def load_samples(
    paths: list[str | Path], methods: list[str], size: int, limit: int, seeds: list[int] | None = None
) -> list[MethodSamples]:
    """Each (method, seed)'s samples, in ``methods`` order, then seed order.

    Params:
        paths: ``samples/{method}_seed{seed}.npz`` files.
        methods: the method rows (``training.methods`` and the names of ``training.variants``);
            every (method, seed) needs a file, and no file may hold another.
        size: image side of the real dataset (the samples must match it).
        limit: ``evaluation.samples``; larger files are cut to their first ``limit`` images.
        seeds: ``training.seeds`` (default [0]); a file without a ``seed`` is seed 0.
    Returns:
        List of MethodSamples.
    Raises:
        ArtifactError: a file is missing, malformed or of the wrong size (naming it).
        ConfigError: the files and ``training.methods`` do not match.
    """
    seeds = [0] if seeds is None else list(seeds)
    found: dict[tuple[str, int], MethodSamples] = {}
    for path in map(Path, paths):
        data = load_npz(path, required=("images", "method"))
        method = str(np.asarray(data["method"]).reshape(-1)[0])
        seed = int(np.asarray(data["seed"]).reshape(-1)[0]) if "seed" in data else 0
        images = _check_images(data["images"], path, "images")
        if images.shape[-1] != size:
            raise ArtifactError(f"{path}: samples are {images.shape[-1]} px but the real images are {size} px")
        if len(images) < 2:
            raise ArtifactError(f"{path}: {len(images)} sample(s); at least 2 are needed")
        if method not in methods:
            raise ConfigError(
                f"{path} holds method '{method}', which is not in config key 'training.methods' "
                f"(or training.variants) = {methods}"
            )
        if seed not in seeds:
            raise ConfigError(f"{path} holds seed {seed}, which is not in config key 'training.seeds' = {seeds}")
        if (method, seed) in found:
            raise ArtifactError(f"{path}: method '{method}' seed {seed} also comes from {found[method, seed].path}")
        if len(images) > limit:
            log.info("%s: using the first %d of %d samples (evaluation.samples)", path, limit, len(images))
            images = images[:limit]
        elif len(images) < limit:
            log.warning(
                "%s: only %d samples (evaluation.samples = %d); N is stated in the table", path, len(images), limit
            )
        found[method, seed] = MethodSamples(
            method,
            images,
            _scalar(data, "train_seconds"),
            _scalar(data, "samples_per_second"),
            path,
            seed,
            {k: v for k in INFO_KEYS if (v := _scalar(data, k)) is not None},
        )
    missing = [f"{m}_seed{s}" for m in methods for s in seeds if (m, s) not in found]
    if missing:
        raise ConfigError(
            f"config keys 'training.methods' and 'training.seeds' ask for {missing} but no samples file was "
            f"given for them (expected samples/<method>_seed<seed>.npz)"
        )
    return [found[m, s] for m in methods for s in seeds]
