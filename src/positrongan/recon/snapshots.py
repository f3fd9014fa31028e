"""Candidate images of one low-count reconstruction at the dataset's slice scale, for the
classical enhancement baselines that pick a reconstruction setting on the validation scans
(docs/enhancement.md):

- ``osem_early``: the OSEM image after each iteration 1 .. ``enhancement.osem_max_iterations``,
  each post-filtered at every FWHM of ``enhancement.osem_fwhm_mm`` (the reconstruction's own 3D
  post-filter, ``driver.postfilter``);
- ``map_rdp``: the MAP-OSEM image (relative-difference prior) at each beta of
  ``enhancement.map_betas``, unfiltered.

Each candidate volume is brought to the dataset's scale exactly as the dataset does it (slabs of
``dataset.slice_planes`` planes, then ``dataset.image_size`` px: ``positrongan.slices``) and only
the planes through the part are kept (the only ones the dataset draws). The stack is stored as
float16 of the values over the file's ``unit`` (its largest value), about 1e-3 relative precision,
so a file is 2 bytes per pixel per candidate.
"""

from __future__ import annotations

import numpy as np

from ..slices import resize_volume, slab
from .driver import postfilter


class SnapshotRecorder:
    """Collects the candidates of one or more reconstructions (a callback of
    ``osem3d.reconstruct_3d``): per kept iteration, one candidate per FWHM.

    Params:
        voxel_mm: (3,) voxel size of the reconstruction grid (z, y, x).
        planes: reconstruction planes to keep (sorted).
        image_size, slice_planes: the ``dataset`` config.
        fwhm_mm: post-filter FWHMs applied to each kept image (0: none).
        iterations: the 1-based iterations whose image is kept (None: every one).
    Attributes:
        beta: the prior strength of the reconstruction now running, recorded with its candidates.
    """

    def __init__(self, voxel_mm, planes, image_size: int, slice_planes: int, fwhm_mm, iterations=None):
        self.voxel_mm = np.asarray(voxel_mm, dtype=np.float64)
        self.planes = np.asarray(planes, dtype=np.int64)
        self.size, self.thick = int(image_size), int(slice_planes)
        self.fwhm_mm = [float(h) for h in fwhm_mm]
        self.iterations = None if iterations is None else {int(k) for k in iterations}
        self.beta = 0.0
        self.settings: list[tuple[int, float, float]] = []
        self.stack: list[np.ndarray] = []

    def dataset_slices(self, volume: np.ndarray, fwhm: float) -> np.ndarray:
        """(planes, g, g) volume -> (P, S, S) float32: the kept planes at dataset scale after the
        reconstruction's post-filter of this FWHM."""
        filtered = postfilter(volume, self.voxel_mm, fwhm)
        return resize_volume(slab(filtered, self.thick)[self.planes], self.size)

    def __call__(self, k: int, x) -> None:
        if self.iterations is not None and k not in self.iterations:
            return
        volume = x.detach().cpu().numpy().astype(np.float32) if hasattr(x, "detach") else np.asarray(x, np.float32)
        for fwhm in self.fwhm_mm:
            self.settings.append((int(k), fwhm, float(self.beta)))
            self.stack.append(self.dataset_slices(volume, fwhm))

    def arrays(self) -> dict[str, np.ndarray]:
        """The candidates: ``slices`` (C, P, S, S) float16 in units of ``unit``, and per
        candidate ``iterations``, ``fwhm_mm``, ``beta``; ``planes`` (P,), ``image_size``,
        ``slice_planes``."""
        if not self.stack:
            raise ValueError("no candidate image was recorded")
        it, fw, be = (np.array(v) for v in zip(*self.settings))
        return pack(np.stack(self.stack)) | {
            "iterations": it.astype(np.int64),
            "fwhm_mm": fw.astype(np.float64),
            "beta": be.astype(np.float64),
            "planes": self.planes,
            "image_size": np.int64(self.size),
            "slice_planes": np.int64(self.thick),
        }


def pack(stack: np.ndarray) -> dict[str, np.ndarray]:
    """float32 candidates -> ``slices`` float16 of stack / unit and ``unit`` (the largest value;
    the raw images are ~1e-3 in reconstruction units, below float16's normal range)."""
    stack = np.clip(stack, 0.0, None)
    top = float(stack.max(initial=0.0))
    unit = top if top > 0 else 1.0
    return {"slices": (stack / unit).astype(np.float16), "unit": np.float64(unit)}


def unpack(arrays: dict) -> np.ndarray:
    """The candidates of a snapshot file in reconstruction units (float32)."""
    return arrays["slices"].astype(np.float32) * np.float32(arrays["unit"])


def tube_planes(activity: np.ndarray | None, n_planes: int) -> np.ndarray:
    """Planes through the part (true activity > 0; every plane without a truth map): the planes
    the dataset draws its slices from (``data.positron.select_planes``)."""
    if activity is None:
        return np.arange(n_planes, dtype=np.int64)
    return np.flatnonzero(activity.reshape(len(activity), -1).max(1) > 0).astype(np.int64)
