"""The ring's system model: exact line integrals through the image grid (Siddon), stored as a
sparse matrix and applied with torch to all planes at once.

Image grid: ``grid`` x ``grid`` square pixels covering ``[-fov/2, fov/2]`` in x and y, indexed
``[y, x]`` (pixel ``(iy, ix)`` has centre ``-fov/2 + (i + 0.5) * fov / grid``); flattened as
``iy * grid + ix``. Rows are sinogram cells, view-major (``view * bins + bin``). Entry (i, j) is
the length in mm of LOR i inside pixel j, so ``A @ mu`` is the attenuation line integral and
``A @ activity`` the expected counts per unit activity and time, up to the plane's factors.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..errors import ArtifactError
from ..io import load_npz, save_npz
from .lors import SinogramGeometry

log = logging.getLogger(__name__)


def siddon(p0: np.ndarray, p1: np.ndarray, grid: int, fov_mm: float) -> sp.csr_matrix:
    """Siddon's exact ray-pixel intersection lengths, vectorised over rays.

    A ray running exactly along a pixel boundary (an axis-parallel LOR of the ring) belongs
    to both neighbouring columns: it gets half of each (the mean of the limits from either
    side), so that angle samples the image like every other angle.

    Params:
        p0, p1: (M, 2) end points (x, y) in mm.
        grid: pixels per side.
        fov_mm: side of the image square in mm.
    Returns:
        (M, grid*grid) CSR matrix of intersection lengths in mm (float32).
    """
    p0 = np.asarray(p0, dtype=np.float64)
    p1 = np.asarray(p1, dtype=np.float64)
    d = p1 - p0
    length = np.hypot(d[:, 0], d[:, 1])
    pix = fov_mm / grid
    shift = np.zeros_like(p0)
    for axis in (0, 1):
        # Along axis 1-axis (constant coordinate `axis`) and on a grid line of that coordinate.
        pos = (p0[:, axis] + fov_mm / 2) / pix
        on_edge = (np.abs(d[:, axis]) <= 1e-9 * length) & (np.abs(pos - np.rint(pos)) <= 1e-6)
        shift[on_edge, axis] = 1e-4 * pix
    if not shift.any():
        return _siddon(p0, p1, grid, fov_mm)
    return (
        0.5 * (_siddon(p0 + shift, p1 + shift, grid, fov_mm) + _siddon(p0 - shift, p1 - shift, grid, fov_mm))
    ).tocsr()


def _siddon(p0: np.ndarray, p1: np.ndarray, grid: int, fov_mm: float) -> sp.csr_matrix:
    m = len(p0)
    d = p1 - p0
    length = np.hypot(d[:, 0], d[:, 1])
    planes = np.linspace(-fov_mm / 2, fov_mm / 2, grid + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ax = (planes[None, :] - p0[:, :1]) / d[:, :1]
        ay = (planes[None, :] - p0[:, 1:]) / d[:, 1:]
    # A ray parallel to an axis crosses none of that axis' planes: push those alphas outside.
    ax[~np.isfinite(ax)] = 2.0
    ay[~np.isfinite(ay)] = 2.0
    alpha = np.concatenate([np.zeros((m, 1)), np.clip(ax, 0, 1), np.clip(ay, 0, 1), np.ones((m, 1))], axis=1)
    alpha.sort(axis=1)
    seg = np.diff(alpha, axis=1) * length[:, None]
    mid = 0.5 * (alpha[:, 1:] + alpha[:, :-1])
    pix = fov_mm / grid
    ix = np.floor((p0[:, :1] + mid * d[:, :1] + fov_mm / 2) / pix).astype(np.int64)
    iy = np.floor((p0[:, 1:] + mid * d[:, 1:] + fov_mm / 2) / pix).astype(np.int64)
    # Zero-length segments come from coincident crossings (corners); drop them.
    ok = (seg > 1e-9 * fov_mm) & (ix >= 0) & (ix < grid) & (iy >= 0) & (iy < grid)
    rows = np.broadcast_to(np.arange(m)[:, None], seg.shape)[ok]
    mat = sp.csr_matrix(
        (seg[ok].astype(np.float32), (rows, (iy * grid + ix)[ok])), shape=(m, grid * grid), dtype=np.float32
    )
    mat.sum_duplicates()
    return mat


@dataclass
class SystemModel:
    """The sparse system matrix of one geometry and grid, with what it was built from.

    Attributes:
        matrix: (views*bins, grid*grid) CSR, lengths in mm.
        geometry: the sinogram sampling.
        grid: pixels per side.
        fov_mm: side of the image square.
        plane_weight: (planes,) ordered ring pairs per rebinned plane.
        fingerprint: JSON of every parameter the model depends on (checked on load).
    """

    matrix: sp.csr_matrix
    geometry: SinogramGeometry
    grid: int
    fov_mm: float
    plane_weight: np.ndarray
    fingerprint: str

    @property
    def sino_shape(self) -> tuple[int, int]:
        return self.geometry.shape

    def save(self, path: str | Path) -> None:
        """Write the model as ``.npz`` (atomically)."""
        g = self.geometry
        save_npz(
            path,
            indptr=self.matrix.indptr.astype(np.int64),
            indices=self.matrix.indices.astype(np.int32),
            data=self.matrix.data.astype(np.float32),
            shape=np.array(self.matrix.shape, dtype=np.int64),
            crystals=np.int64(g.crystals),
            radius_mm=np.float64(g.radius_mm),
            t_range=np.array([g.t_lo, g.t_hi], dtype=np.int64),
            grid=np.int64(self.grid),
            fov_mm=np.float64(self.fov_mm),
            plane_weight=self.plane_weight.astype(np.float32),
            fingerprint=np.array(self.fingerprint),
        )

    @classmethod
    def load(cls, path: str | Path, expect_fingerprint: str | None = None) -> SystemModel:
        """Read a model written by :meth:`save`.

        Params:
            path: the ``.npz``.
            expect_fingerprint: when given, the model must have been built for exactly it.
        Raises:
            ArtifactError: unreadable file, or a model built for another geometry or grid.
        """
        keys = (
            "indptr",
            "indices",
            "data",
            "shape",
            "crystals",
            "radius_mm",
            "t_range",
            "grid",
            "fov_mm",
            "plane_weight",
            "fingerprint",
        )
        z = load_npz(path, required=keys)
        fp = str(z["fingerprint"])
        if expect_fingerprint is not None and fp != expect_fingerprint:
            raise ArtifactError(
                f"{path}: system model was built for {fp}, but the config asks for {expect_fingerprint}; "
                "rebuild it (positrongan system-model)"
            )
        mat = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(int(s) for s in z["shape"]))
        geom = SinogramGeometry(int(z["crystals"]), float(z["radius_mm"]), int(z["t_range"][0]), int(z["t_range"][1]))
        return cls(mat, geom, int(z["grid"]), float(z["fov_mm"]), z["plane_weight"], fp)


def fingerprint(scanner_cfg: dict, recon_cfg: dict) -> str:
    """The parameters a system model depends on, as canonical JSON."""
    keys = ("crystals_per_ring", "rings", "crystal_pitch_mm", "axial_pitch_mm", "crystal_depth_mm")
    data = {
        "scanner": {k: scanner_cfg[k] for k in keys},
        "grid": recon_cfg["grid"],
        "fov_mm": recon_cfg["fov_mm"],
        "doi_mm": recon_cfg["doi_mm"],
        "max_ring_difference": recon_cfg["max_ring_difference"],
    }
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def build_system_model(scanner, recon_cfg: dict, scanner_cfg: dict | None = None) -> SystemModel:
    """Build the system model of a scanner and the ``reconstruction`` grid.

    Params:
        scanner: a :class:`~positrongan.geometry.scanner.Scanner`.
        recon_cfg: the ``reconstruction`` config section (grid, fov_mm, doi_mm, max_ring_difference).
        scanner_cfg: the ``scanner`` section (for the fingerprint); derived from ``scanner`` if None.
    Returns:
        The model.
    """
    from .lors import plane_weights

    geom = SinogramGeometry.for_grid(scanner, recon_cfg["fov_mm"], recon_cfg["doi_mm"])
    p0, p1 = geom.endpoints()
    mat = siddon(p0.reshape(-1, 2), p1.reshape(-1, 2), recon_cfg["grid"], recon_cfg["fov_mm"])
    if scanner_cfg is None:
        scanner_cfg = {k: getattr(scanner, k) for k in scanner.__dataclass_fields__}
    weights = plane_weights(scanner, recon_cfg["max_ring_difference"])
    log.info(
        "system model: %d views x %d bins x %d^2 pixels, %d non-zeros (%.1f MB)",
        geom.n_views,
        geom.n_bins,
        recon_cfg["grid"],
        mat.nnz,
        (mat.data.nbytes + mat.indices.nbytes) / 1e6,
    )
    return SystemModel(mat, geom, recon_cfg["grid"], recon_cfg["fov_mm"], weights, fingerprint(scanner_cfg, recon_cfg))


class TorchProjector:
    """Forward and back projection of all planes at once with torch sparse CSR matrices.

    Images are (grid*grid, planes) and sinograms (rows, planes) torch tensors: planes are the
    columns, so one sparse-dense product projects every plane.

    Params:
        model: the system model.
        device: torch device.
        subsets: number of ordered subsets (interleaved views); 1 for MLEM.
    """

    def __init__(self, model: SystemModel, device, subsets: int = 1):
        import torch

        self.device = torch.device(device)
        nv, nb = model.sino_shape
        self.subset_rows: list[np.ndarray] = []
        self._fwd = []
        self._back = []
        for s in range(subsets):
            views = np.arange(s, nv, subsets)
            rows = (views[:, None] * nb + np.arange(nb)[None, :]).ravel()
            sub = model.matrix[rows]
            self.subset_rows.append(rows)
            self._fwd.append(to_torch_csr(sub, self.device))
            self._back.append(to_torch_csr(sub.T.tocsr(), self.device))
        if subsets == 1:
            self._full = self._fwd[0]
        else:
            self._full = to_torch_csr(model.matrix, self.device)
        self.n_pixels = model.matrix.shape[1]

    def memory_bytes(self) -> int:
        """Bytes held by the sparse tensors (values and indices of every matrix)."""
        mats = {id(m): m for m in (*self._fwd, *self._back, self._full)}.values()
        return sum(t.element_size() * t.numel() for m in mats for t in (m.values(), m.col_indices(), m.crow_indices()))

    def forward(self, x, subset: int | None = None):
        """A @ x for all rows (subset None) or one subset's rows."""
        mat = self._full if subset is None else self._fwd[subset]
        return mat @ x

    def back(self, y, subset: int = 0):
        """A_s^T @ y for one subset's rows (subset 0 of 1 is the full matrix)."""
        return self._back[subset] @ y


def to_torch_csr(mat: sp.spmatrix, device, dtype=None):
    """A scipy sparse matrix as a torch CSR tensor on ``device`` (float32 unless ``dtype``)."""
    import warnings

    import torch

    dtype = torch.float32 if dtype is None else dtype
    mat = mat.tocsr()
    with warnings.catch_warnings():
        # "CSR support is in beta": the products used here (CSR @ dense) are stable on CPU and CUDA.
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.from_numpy(mat.indptr.astype(np.int64)),
            torch.from_numpy(mat.indices.astype(np.int64)),
            torch.from_numpy(mat.data).to(dtype),
            size=mat.shape,
            device=device,
            check_invariants=False,  # built by scipy from a valid CSR matrix
        )
