"""Sliced Wasserstein distance between Laplacian-pyramid patch sets (Karras et al. 2017, §5).

Each image set is decomposed into a Laplacian pyramid (5-tap binomial filter, from full size
down to ``evaluation.swd_min_size`` px). At every level we draw ``swd_patches`` random
``swd_patch_size`` x ``swd_patch_size`` patches per set, normalise each set's descriptors by
its own mean and standard deviation (as Karras et al. do, so the distance compares structure,
not global brightness), and take the sliced Wasserstein distance with POT
(``ot.sliced_wasserstein_distance``, p = 1: the mean 1-D Wasserstein distance over random
projections, Karras et al.'s estimator). Reported per level and averaged, times 1e3 as in the
paper that introduced it. No pretrained network is involved.
"""

from __future__ import annotations

import numpy as np
import ot
import torch
import torch.nn.functional as F

from ..errors import ConfigError

_BINOMIAL = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _blur(x: torch.Tensor) -> torch.Tensor:
    k = torch.as_tensor(_BINOMIAL, dtype=x.dtype, device=x.device)
    x = F.pad(x[:, None], (2, 2, 2, 2), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, 5))
    return F.conv2d(x, k.view(1, 1, 5, 1))[:, 0]


def laplacian_pyramid(images: np.ndarray, min_size: int) -> list[np.ndarray]:
    """Laplacian pyramid of a set of grey images, finest level first.

    Params:
        images: (N, S, S).
        min_size: side of the coarsest level (its plain low-pass image is the last level).
    Returns:
        List of (N, s, s) float32 arrays, s = S, S/2, ..., min_size.
    """
    x = torch.as_tensor(np.asarray(images, dtype=np.float32))
    levels = []
    while x.shape[-1] > min_size:
        low = _blur(x)[:, ::2, ::2]
        # Upsample as Karras et al.: insert zeros, then blur with 4x the kernel's mass.
        up = torch.zeros_like(x)
        up[:, ::2, ::2] = low
        levels.append((x - 4.0 * _blur(up)).numpy())
        x = low
    levels.append(x.numpy())
    return levels


def _patches(level: np.ndarray, count: int, size: int, rng: np.random.Generator) -> np.ndarray:
    n, h, w = level.shape
    idx = rng.integers(0, n, count)
    ys = rng.integers(0, h - size + 1, count)
    xs = rng.integers(0, w - size + 1, count)
    off = np.arange(size)
    rows = (ys[:, None] + off)[:, :, None]
    cols = (xs[:, None] + off)[:, None, :]
    desc = level[idx[:, None, None], rows, cols].reshape(count, size * size).astype(np.float64)
    # Per-set normalisation (Karras et al., finalize_descriptors).
    desc -= desc.mean()
    std = desc.std()
    return desc / std if std > 0 else desc


def check_settings(size: int, ev: dict) -> None:
    """ConfigError unless the pyramid and patches fit a ``size`` px image."""
    if ev["swd_min_size"] > size:
        raise ConfigError(
            f"config key 'evaluation.swd_min_size' = {ev['swd_min_size']} is larger than the images ({size} px)"
        )
    if ev["swd_patch_size"] > ev["swd_min_size"]:
        raise ConfigError(
            f"config key 'evaluation.swd_patch_size' = {ev['swd_patch_size']} must not exceed "
            f"evaluation.swd_min_size = {ev['swd_min_size']}"
        )


def sliced_wasserstein(
    real: np.ndarray, fake: np.ndarray, ev: dict, seed: int, projection_seed: int | None = None
) -> dict:
    """SWD between two image sets at every pyramid level.

    Params:
        real, fake: (N, S, S) and (M, S, S) in [0, 1].
        ev: the ``evaluation`` config section (swd_patches, swd_projections, swd_patch_size, swd_min_size).
        seed: patch sampling seed (and the projections' when ``projection_seed`` is None).
        projection_seed: the seed of the random projections. The evaluation passes one value
            for every row, so rows differ by their images and patches, not by their projections.
    Returns:
        ``{"swd": mean over levels x 1e3, "swd_levels": {size: value x 1e3}}``.
    """
    check_settings(real.shape[-1], ev)
    rng = np.random.default_rng(seed)
    proj_seed = int(rng.integers(0, 2**31 - 1)) if projection_seed is None else projection_seed % (2**31 - 1)
    per_level = {}
    for lr, lf in zip(laplacian_pyramid(real, ev["swd_min_size"]), laplacian_pyramid(fake, ev["swd_min_size"])):
        dr = _patches(lr, ev["swd_patches"], ev["swd_patch_size"], rng)
        df = _patches(lf, ev["swd_patches"], ev["swd_patch_size"], rng)
        # Same projections for every level (and, given projection_seed, every row): differences
        # are not projection noise.
        d = ot.sliced_wasserstein_distance(dr, df, n_projections=ev["swd_projections"], p=1, seed=proj_seed)
        per_level[int(lr.shape[-1])] = 1e3 * float(d)
    return {"swd": float(np.mean(list(per_level.values()))), "swd_levels": per_level}
