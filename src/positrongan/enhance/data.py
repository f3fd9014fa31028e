"""Enhancement pairs from ``dataset/positron.npz``: (low_count[i, j], images[i]) per slice i
and count fraction j. Training uses the train-split scans only, model selection and tuning the
val split, the reported numbers the test split (the dataset splits by scan)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.positron import load_dataset
from ..errors import ArtifactError
from ..io import load_npz

# Low-count slices are not clipped at 1 by the dataset (their noise is what must be removed);
# the networks see them clipped here, far above the fluid level (1) so only the rare single
# hot pixels of the shortest scans are cut.
INPUT_CLIP = 4.0


@dataclass
class PairSet:
    """The slices of one split with every short-scan twin.

    Attributes:
        index: (N,) row indices into the dataset arrays.
        low: (N, F, S, S) low-count slices (dataset scale, not clipped).
        reference: (N, S, S) reference slices in [0, 1].
        fractions: (F,) count fractions.
    """

    index: np.ndarray
    low: np.ndarray
    reference: np.ndarray
    fractions: np.ndarray

    def __len__(self) -> int:
        return len(self.index)


def load_pairs(path: str | Path) -> dict[str, PairSet]:
    """Split the dataset's enhancement pairs by split.

    Params:
        path: ``dataset/positron.npz``.
    Returns:
        split name -> PairSet (every split of the file, empty ones included).
    Raises:
        ArtifactError: naming the file when it has no short-scan twins or they are malformed.
    """
    base = load_dataset(path)
    raw = load_npz(path)
    if "low_count" not in raw or "low_count_fractions" not in raw:
        raise ArtifactError(
            f"{path}: no short-scan twins ('low_count'); set config key 'dataset.low_count_fractions' "
            "to at least one fraction and rebuild the dataset"
        )
    low = raw["low_count"].astype(np.float32, copy=False)
    fractions = np.asarray(raw["low_count_fractions"], dtype=np.float64)
    images = base["images"]
    if (
        low.ndim != 4
        or low.shape[0] != len(images)
        or low.shape[2:] != images.shape[1:]
        or low.shape[1] != len(fractions)
    ):
        raise ArtifactError(
            f"{path}: 'low_count' must be (N, F, S, S) = ({len(images)}, {len(fractions)}, "
            f"{images.shape[1]}, {images.shape[2]}), got {low.shape}"
        )
    if not np.isfinite(low).all():
        raise ArtifactError(f"{path}: 'low_count' contains NaN or infinite values")
    out = {}
    for name in ("train", "val", "test"):
        idx = np.flatnonzero(base["split"] == name).astype(np.int64)
        out[name] = PairSet(idx, low[idx], images[idx], fractions)
    return out


def network_input(low: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """(N, F, S, S) low-count slices -> (N * F, 2, S, S) network inputs, slice-major: the
    slice clipped to [0, INPUT_CLIP] and mapped as the targets are (x -> 2x - 1), and the
    fraction plane (``networks.fraction_code``)."""
    from .networks import fraction_code

    n, f, s, _ = low.shape
    x = np.empty((n, f, 2, s, s), dtype=np.float32)
    x[:, :, 0] = 2.0 * np.clip(low, 0.0, INPUT_CLIP) - 1.0
    for j, frac in enumerate(fractions):
        x[:, j, 1] = fraction_code(float(frac))
    return x.reshape(n * f, 2, s, s)
