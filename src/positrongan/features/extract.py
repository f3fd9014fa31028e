"""From training positron images to the attention memory (the features artifact)."""

from __future__ import annotations

import logging

import numpy as np

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
