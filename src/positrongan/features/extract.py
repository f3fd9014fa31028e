"""From training positron images to the attention memory; the reader and writer of the
features artifact (``features/positron_features.npz``)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import ArtifactError
from ..io import load_npz, save_npz
from .pca import fit_pca
from .pcanet import fit_pcanet, pcanet_memory

log = logging.getLogger(__name__)


def memory_features(images: np.ndarray, feat_cfg: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Fit the configured feature extractor and return the contract's arrays.

    Params:
        images: (m, S, S) training images in [0, 1].
        feat_cfg: the ``features`` config section.
        seed: seed of PCANet's patch subset.
    Returns:
        ``memory`` (m, k), ``components``, ``mean``, ``explained_variance``,
        ``explained_variance_ratio`` (float32) and ``method``; for PCANet also the filter banks
        ``pcanet_filters1`` and ``pcanet_filters2`` and ``pcanet_block``.
    """
    m, s, _ = images.shape
    flat = images.reshape(m, s * s)
    k = feat_cfg["components"]
    if k > m:
        # PCA has at most m - 1 meaningful directions on m samples; say so rather than fail.
        log.warning("features.components = %d > %d training images: using k = %d", k, m, m)
        k = m
    out: dict[str, np.ndarray] = {"method": np.array(feat_cfg["method"])}
    if feat_cfg["method"] == "pca":
        pca = fit_pca(flat, k)
        memory = pca.transform(flat)
    else:
        net = fit_pcanet(
            images,
            tuple(feat_cfg["pcanet_filters"]),
            feat_cfg["pcanet_patch"],
            feat_cfg["pcanet_block"],
            seed=seed,
        )
        memory, pca = pcanet_memory(images, net, k)
        out.update(
            pcanet_filters1=net.filters1,
            pcanet_filters2=net.filters2,
            pcanet_block=np.array(net.block),
        )
    log.info(
        "%s features: %d memory vectors of dimension %d, %.1f %% of the variance kept",
        feat_cfg["method"],
        memory.shape[0],
        memory.shape[1],
        100 * pca.explained_variance_ratio.sum(),
    )
    out.update(
        memory=memory.astype(np.float32),
        components=pca.components.astype(np.float32),
        mean=pca.mean.astype(np.float32),
        explained_variance=pca.explained_variance.astype(np.float32),
        explained_variance_ratio=pca.explained_variance_ratio.astype(np.float32),
    )
    return out


def memory_names(data: dict[str, np.ndarray], split: str = "train") -> np.ndarray:
    """One name per memory vector: ``scan_003/plane_041`` when the dataset (from
    :func:`~positrongan.data.positron.load_dataset`) says where its slices come from."""
    pick = data["split"] == split
    if "scan" in data and "plane" in data:
        return np.array([f"{s}/plane_{int(p):03d}" for s, p in zip(data["scan"][pick], data["plane"][pick])])
    return np.array([f"{split}_{i:05d}" for i in range(int(pick.sum()))])


def save_features(path: str | Path, features: dict[str, np.ndarray], names: np.ndarray) -> None:
    """Write ``features/positron_features.npz``: :func:`memory_features`' arrays and ``names``."""
    save_npz(path, **features, names=names)


def load_memory(path: str | Path) -> np.ndarray:
    """The memory (M, k) float32 of ``features/positron_features.npz``.

    Raises:
        ArtifactError: naming the file, when it is missing or its memory is empty or not finite.
    """
    data = load_npz(path, required=("memory",))
    memory = data["memory"].astype(np.float32)
    if memory.ndim != 2 or len(memory) == 0 or not np.isfinite(memory).all():
        raise ArtifactError(f"{path}: 'memory' must be a finite, non-empty (M, k) array")
    return memory
