"""Attenuation and randoms factors of the reconstruction model.

In non-destructive testing the part's geometry and material are known, so the attenuation of
each line of response is computed from the phantom's mu-map (``truth/{scan}.npz``, 1/mm at
511 keV) with the same exact line integrals as the system model: ``a = exp(-A mu)``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .projector import SystemModel


def attenuation_factors(model: SystemModel, mu: np.ndarray) -> np.ndarray:
    """Survival probability of a photon pair along every LOR of every plane.

    Params:
        model: the system model.
        mu: (planes, grid, grid) linear attenuation coefficient in 1/mm on the model's grid.
    Returns:
        (planes, views, bins) float32 in (0, 1].
    Raises:
        ValueError: a mu-map whose transaxial shape differs from the model's grid, or negative mu.
    """
    g = model.grid
    if mu.ndim != 3 or mu.shape[1:] != (g, g):
        raise ValueError(f"mu-map shape {mu.shape} does not match the reconstruction grid (planes, {g}, {g})")
    if np.nanmin(mu) < 0:
        raise ValueError("mu-map has negative attenuation coefficients")
    planes = mu.shape[0]
    line = model.matrix @ mu.reshape(planes, -1).T.astype(np.float32)  # (rows, planes), dimensionless
    nv, nb = model.sino_shape
    return np.exp(-line.T).reshape(planes, nv, nb).astype(np.float32)


def randoms_estimate(delayed: np.ndarray, smooth: tuple[int, int, int]) -> np.ndarray:
    """Expected randoms per cell from the delayed-window sinogram.

    The delayed window counts randoms with the prompts' rate but no trues; randoms vary slowly
    across the sinogram, so a box filter lowers the estimate's variance while keeping its sum.

    Params:
        delayed: (planes, views, bins) delayed coincidence counts.
        smooth: box sizes along (planes, views, bins); 1 means no smoothing along that axis.
    Returns:
        (planes, views, bins) float32.
    """
    out = ndimage.uniform_filter(delayed.astype(np.float64), size=smooth, mode="nearest")
    return out.astype(np.float32)
