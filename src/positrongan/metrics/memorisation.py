"""Memorisation: how close each generated image is to its nearest training image.

Data-scarce GANs tend to copy their training set. For every generated image we take the
highest MS-SSIM over all training images and average; the same number for the held-out real
test images (real images the generator never saw) is the reference a non-copying generator
should not exceed by much. A value near 1 means near-copies.
"""

from __future__ import annotations

import numpy as np

from .msssim import MSSSIMSettings, ms_ssim_matrix


def nearest_train_msssim(
    images: np.ndarray, train: np.ndarray, settings: MSSSIMSettings, device="cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """Best MS-SSIM of each image against the training set, and which training image it is.

    Params:
        images: (N, S, S) in [0, 1].
        train: (M, S, S) training images in [0, 1].
        settings: MS-SSIM scales and window.
        device: torch device.
    Returns:
        (best (N,) float64, index into ``train`` (N,) int).
    """
    scores = ms_ssim_matrix(images, train, settings, device)
    idx = scores.argmax(axis=1)
    return scores[np.arange(len(images)), idx], idx
