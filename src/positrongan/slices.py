"""The slice scale of the dataset: one resampling shared by the dataset and by the detectability
scores, so a defect is scored at exactly the scale the dataset shows it.

A dataset slice is the mean of ``dataset.slice_planes`` adjacent reconstruction planes (a
thicker slice: less noise, more axial partial volume), resized to ``dataset.image_size``.
"""

from __future__ import annotations

import numpy as np


def resize(img: np.ndarray, size: int) -> np.ndarray:
    """Area-preserving resize (anti-aliased when shrinking) of a 2D slice to size x size."""
    from skimage.transform import resize as _resize

    if img.shape == (size, size):
        return img.astype(np.float32)
    return _resize(img, (size, size), order=1, anti_aliasing=img.shape[0] > size, preserve_range=True).astype(
        np.float32
    )


def resize_labels(labels: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of an integer label slice to size x size (labels are not averaged)."""
    from skimage.transform import resize as _resize

    if labels.shape == (size, size):
        return labels.copy()
    return _resize(labels, (size, size), order=0, anti_aliasing=False, preserve_range=True).astype(labels.dtype)


def resize_volume(volume: np.ndarray, size: int, labels: bool = False) -> np.ndarray:
    """Every transverse plane of a (planes, g, g) volume resized to (planes, size, size)."""
    one = resize_labels if labels else resize
    return np.stack([one(plane, size) for plane in volume]) if len(volume) else volume


def slab(volume: np.ndarray, planes: int) -> np.ndarray:
    """Each plane replaced by the mean of the ``planes`` planes centred on it (edges repeat the
    end plane), so plane p of the result is the dataset slice centred on plane p."""
    if planes <= 1:
        return volume
    from scipy.ndimage import uniform_filter1d

    return uniform_filter1d(volume.astype(np.float32), size=planes, axis=0, mode="nearest")


def dataset_scale(volume: np.ndarray, size: int, planes: int = 1) -> np.ndarray:
    """A (planes, g, g) volume at the dataset's scale: slabs of ``planes`` planes, then every
    plane resized to size x size."""
    return resize_volume(slab(volume, planes), size)
