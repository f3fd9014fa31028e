"""The classical anchor: the best Gaussian post-filter of each count fraction, its width tuned
on the validation scans by mean PSNR against the reference slices (a sigma of 0 leaves the
slice as it is, so the tuned filter never scores below the raw slice on validation)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .quality import psnr


def gaussian(low: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian filter of every (S, S) slice of ``low`` (any leading shape), clipped to [0, 1]
    (the reference's display scale); sigma in pixels, 0 = no filter. Edges reflect."""
    if sigma_px <= 0:
        return np.clip(low, 0.0, 1.0).astype(np.float32)
    sig = (0.0,) * (low.ndim - 2) + (sigma_px, sigma_px)
    return np.clip(ndimage.gaussian_filter(low.astype(np.float64), sig, mode="reflect"), 0.0, 1.0).astype(np.float32)


def tune_sigma(low: np.ndarray, reference: np.ndarray, sigmas) -> tuple[float, np.ndarray]:
    """The sigma of ``sigmas`` with the highest mean PSNR of the filtered slices.

    Params:
        low: (N, S, S) validation slices at one fraction.
        reference: (N, S, S) their reference slices.
        sigmas: candidate widths (px).
    Returns:
        (best sigma, mean PSNR per candidate).
    """
    if len(low) == 0:
        raise ValueError("no validation slice to tune the Gaussian filter on (the val split is empty)")
    scores = np.array([psnr(gaussian(low, float(s)), reference).mean() for s in sigmas])
    return float(sigmas[int(np.argmax(scores))]), scores
