"""The positron training images, as training reads them from the dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.positron import load_dataset
from ..errors import ArtifactError


def training_images(path: str | Path, split: str = "train") -> np.ndarray:
    """The ``split`` images of ``dataset/positron.npz`` (read by :func:`load_dataset`).

    Params:
        path: the dataset artifact.
        split: which split.
    Returns:
        (N, S, S) float32 in [0, 1].
    Raises:
        ArtifactError: the dataset is malformed, or the split has fewer than 2 images.
    """
    data = load_dataset(path)
    images = data["images"][data["split"] == split]
    if len(images) < 2:
        raise ArtifactError(f"{path}: {len(images)} image(s) in split '{split}'; training needs at least 2")
    return images
