"""Fully 3D projection along oblique lines of response, on the fly, in torch (CPU or CUDA).

The model (ray-driven, Joseph-type): a line of response from ``p0`` to ``p1`` is sampled at the
points ``p(t_m) = p0 + t_m (p1 - p0)``, ``t_m = m / steps`` (m = 0 .. steps), the image is
interpolated trilinearly at each point (zero outside the grid and outside the field of view),
and the samples are summed with the step length ``|p1 - p0| / steps`` as weight. So ``A x`` is
the line integral of ``x`` (mm x activity) and ``A mu`` the attenuation exponent; the
back-projection ``A^T y`` scatters ``y`` with the same weights, so it is the exact adjoint.

Two implementations of that one model:

- :func:`forward_lors` / :func:`back_lors`: any batch of LORs given by their end points
  (chunked, ``index_add_`` for the adjoint). Used for arbitrary LORs and as the reference.
- :class:`RingProjector3D`: every LOR of the ring scanner, ``(crystal a, ring r1) -> (crystal b,
  ring r2)``, at a cost that does not grow with the counts. Its LORs share their transaxial chord
  across all ``rings^2`` ring pairs, and with one sampling ``t_m`` for every LOR (``steps`` fixed
  by the ring diameter) trilinear interpolation factorises: (1) bilinear resampling of every
  plane of the image along each chord, a sparse ``S`` (chords x samples, pixels) applied to all
  planes at once, gives a "sheet" (sample, plane) per chord; (2) the linear z-interpolation
  between planes at ``z(t_m) = z1 + (z2 - z1) t_m`` depends only on the ring pair and ``m``, a
  sparse ``T`` (ring pairs, samples x planes) shared by every chord, applied to all sheets at
  once. Both are sparse-dense products (no per-LOR index arithmetic), and their transposes give
  the exact adjoint. A 3D sinogram is a (rings^2, chords) tensor: row ``r1 * rings + r2``,
  column = chord, in the projector's chord order (subsets, then radial groups, contiguous).

Field of view: the cylinder inscribed in the image square (radius ``fov_mm / 2``, the whole
axial extent). Voxels outside it are not reconstructed (zero sensitivity), and a LOR belongs to
the 3D sinogram when its chord passes within ``fov_mm / 2`` of the axis.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from ..geometry.scanner import Scanner
from .lors import SinogramGeometry
from .projector import to_torch_csr

log = logging.getLogger(__name__)

# Chords are split into this many groups by distance from the axis, each sampled only over the
# t-range where its chords can meet the field of view (near-tangent chords cross it briefly).
RADIAL_GROUPS = 4


@dataclass(frozen=True)
class ImageGrid:
    """Voxel grid of a (planes, ny, nx) image indexed [z, y, x].

    Attributes:
        shape: (planes, ny, nx).
        voxel_mm: (dz, dy, dx).
        origin_mm: centre of voxel [0, 0, 0] as (z, y, x).
        fov_radius_mm: radius of the cylindrical field of view (voxels whose centre lies outside
            are not reconstructed); None: the whole grid.
    """

    shape: tuple[int, int, int]
    voxel_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float]
    fov_radius_mm: float | None = None

    def fov_mask(self) -> np.ndarray:
        """(ny, nx) bool: voxel centres inside the field of view."""
        _, ny, nx = self.shape
        y = self.origin_mm[1] + np.arange(ny) * self.voxel_mm[1]
        x = self.origin_mm[2] + np.arange(nx) * self.voxel_mm[2]
        if self.fov_radius_mm is None:
            return np.ones((ny, nx), bool)
        return (y[:, None] ** 2 + x[None, :] ** 2) <= self.fov_radius_mm**2


def _interp_1d(coord, size: int):
    """Linear interpolation on integer nodes 0..size-1 with zero padding.

    Returns (i0, w0, i1, w1): neighbour indices clipped into range and their weights (zero
    where the neighbour is outside)."""
    import torch

    i0 = torch.floor(coord)
    f = coord - i0
    i0 = i0.long()
    i1 = i0 + 1
    w0 = (1 - f) * ((i0 >= 0) & (i0 < size))
    w1 = f * ((i1 >= 0) & (i1 < size))
    return i0.clamp(0, size - 1), w0, i1.clamp(0, size - 1), w1


def _trilinear(points, grid: ImageGrid, mask):
    """Flat voxel indices (N, 8) and weights (N, 8) of trilinear interpolation at (N, 3) points
    given as (x, y, z) in mm."""
    import torch

    nz, ny, nx = grid.shape
    (dz, dy, dx), (oz, oy, ox) = grid.voxel_mm, grid.origin_mm
    ix = _interp_1d((points[:, 0] - ox) / dx, nx)
    iy = _interp_1d((points[:, 1] - oy) / dy, ny)
    iz = _interp_1d((points[:, 2] - oz) / dz, nz)
    idx, wts = [], []
    for kz in (0, 2):
        for ky in (0, 2):
            for kx in (0, 2):
                pix = iy[ky] * nx + ix[kx]
                w = iz[kz + 1] * iy[ky + 1] * ix[kx + 1] * mask[pix]
                idx.append(iz[kz] * (ny * nx) + pix)
                wts.append(w)
    return torch.stack(idx, 1), torch.stack(wts, 1)


def _lor_batches(p0, p1, steps: int, max_points: int):
    """Yield (slice, points (B*(steps+1), 3), step length (B,)) over batches of LORs."""
    import torch

    n = len(p0)
    per = max(1, max_points // (steps + 1))
    t = torch.arange(steps + 1, dtype=p0.dtype, device=p0.device) / steps
    for lo in range(0, n, per):
        a, b = p0[lo : lo + per], p1[lo : lo + per]
        d = b - a
        pts = a[:, None, :] + t[None, :, None] * d[:, None, :]
        yield slice(lo, lo + per), pts.reshape(-1, 3), torch.linalg.vector_norm(d, dim=1) / steps


def forward_lors(image, p0, p1, grid: ImageGrid, steps: int, max_points: int = 1 << 20):
    """Line integrals of ``image`` along LORs (the model of this module, any LORs).

    Params:
        image: (planes, ny, nx) torch tensor.
        p0, p1: (B, 3) end points (x, y, z) in mm, torch tensors of the image's dtype and device.
        grid: the image's grid.
        steps: samples per LOR minus one (``t_m = m / steps``).
        max_points: sample points per batch (bounds memory).
    Returns:
        (B,) tensor.
    """
    import torch

    mask = torch.from_numpy(grid.fov_mask().ravel()).to(image.device, image.dtype)
    flat = image.reshape(-1)
    out = torch.zeros(len(p0), dtype=image.dtype, device=image.device)
    for sl, pts, h in _lor_batches(p0, p1, steps, max_points):
        idx, w = _trilinear(pts, grid, mask)
        vals = (flat[idx] * w).sum(1).reshape(-1, steps + 1).sum(1)
        out[sl] = vals * h
    return out


def back_lors(values, p0, p1, grid: ImageGrid, steps: int, max_points: int = 1 << 20):
    """Adjoint of :func:`forward_lors`: ``A^T values`` as a (planes, ny, nx) tensor."""
    import torch

    mask = torch.from_numpy(grid.fov_mask().ravel()).to(values.device, values.dtype)
    out = torch.zeros(int(np.prod(grid.shape)), dtype=values.dtype, device=values.device)
    for sl, pts, h in _lor_batches(p0, p1, steps, max_points):
        idx, w = _trilinear(pts, grid, mask)
        v = (values[sl] * h)[:, None].expand(-1, steps + 1).reshape(-1, 1)
        out.index_add_(0, idx.reshape(-1), (w * v).reshape(-1))
    return out.reshape(grid.shape)


def fov_geometry(scanner: Scanner, fov_mm: float, doi_mm: float) -> SinogramGeometry:
    """The chords of the 3D sinogram: every chord passing within ``fov_mm / 2`` of the axis.

    Raises:
        ConfigError: as :meth:`SinogramGeometry.for_grid` (odd crystal count, FOV wider than the ring).
    """
    square = SinogramGeometry.for_grid(scanner, fov_mm, doi_mm)
    n, radius = square.crystals, square.radius_mm
    t_lo = max(1, math.ceil(n / math.pi * math.acos(min(1.0, fov_mm / 2 / radius)) - 1e-9))
    return SinogramGeometry(crystals=n, radius_mm=radius, t_lo=t_lo, t_hi=n - t_lo)


def steps_for(scanner: Scanner, radius_mm: float, pixel_mm: float, step_voxels: float) -> int:
    """Samples per LOR so that the transaxial spacing is at most ``step_voxels`` pixels on the
    longest chord (the ring diameter)."""
    return max(2, math.ceil(2 * radius_mm / (step_voxels * pixel_mm)))


@dataclass
class Chunk:
    """A contiguous range of chords of the 3D sinogram and its sparse factors.

    Attributes:
        lo, hi: column range in the projector's chord order.
        subset: OSEM subset of these chords.
        group: radial group (its ``T`` factor).
        s_fwd, s_back: ``S`` (chords x samples, pixels) and its transpose, torch CSR.
        chord_len: (chords,) transaxial chord lengths in mm.
    """

    lo: int
    hi: int
    subset: int
    group: int
    s_fwd: object
    s_back: object
    chord_len: object


class RingProjector3D:
    """Every oblique LOR of a ring scanner through the cylindrical field of view.

    Params:
        scanner: the ring geometry.
        fov_mm: side of the image square; the field of view is its inscribed cylinder.
        grid: transaxial voxels per side.
        doi_mm: depth of the LOR end points behind the crystal front faces.
        device: torch device.
        subsets: OSEM subsets (interleaved views, as in 2D).
        step_voxels: largest transaxial sample spacing, in pixels.
        lors_per_batch: LORs (ring pairs x chords) projected at once (bounds memory).
        dtype: torch dtype (float32; float64 for exactness tests).
    """

    def __init__(
        self,
        scanner: Scanner,
        fov_mm: float,
        grid: int,
        doi_mm: float,
        device="cpu",
        subsets: int = 1,
        step_voxels: float = 1.0,
        lors_per_batch: int = 2_000_000,
        dtype=None,
    ):
        import torch

        self.device = torch.device(device)
        self.dtype = dtype or torch.float32
        self.scanner = scanner
        pix = fov_mm / grid
        planes = scanner.n_planes
        self.image_grid = ImageGrid(
            (planes, grid, grid),
            (scanner.axial_pitch_mm / 2, pix, pix),
            (float(scanner.plane_z(0)), -fov_mm / 2 + pix / 2, -fov_mm / 2 + pix / 2),
            fov_mm / 2,
        )
        self.geometry = fov_geometry(scanner, fov_mm, doi_mm)
        radius = self.geometry.radius_mm
        r_fov = fov_mm / 2
        nv, nb = self.geometry.shape
        if not 1 <= subsets <= nv:
            raise ValueError(f"subsets = {subsets} must be between 1 and the number of views ({nv})")
        self.subsets = subsets
        self.steps = steps_for(scanner, radius, pix, step_voxels)
        self.rings = scanner.rings
        self.n_chords = nv * nb

        # Chord order: by subset (views v = s mod subsets), then radial group, then view, bin.
        rho = np.abs(self.geometry.radial_mm())  # (bins,)
        edges = np.quantile(rho, np.linspace(0, 1, RADIAL_GROUPS + 1))
        group_of_bin = np.clip(np.searchsorted(edges, rho, side="right") - 1, 0, RADIAL_GROUPS - 1)
        a, b = self.geometry.cell_crystals()  # (views, bins)
        p0, p1 = self.geometry.endpoints()
        order = []
        spans = []  # (subset, group, lo, hi)
        for s in range(subsets):
            for g in range(RADIAL_GROUPS):
                bins = np.flatnonzero(group_of_bin == g)
                if len(bins) == 0:
                    continue
                views = np.arange(s, nv, subsets)
                cells = (views[:, None] * nb + bins[None, :]).ravel()
                spans.append((s, g, len(order), len(order) + len(cells)))
                order.extend(cells.tolist())
        self.order = np.asarray(order, dtype=np.int64)  # position -> cell (view * bins + bin)
        self.position = np.empty_like(self.order)
        self.position[self.order] = np.arange(len(self.order))
        self.crystal_a = a.ravel()[self.order]
        self.crystal_b = b.ravel()[self.order]
        ends0 = p0.reshape(-1, 2)[self.order]
        ends1 = p1.reshape(-1, 2)[self.order]
        chord_len = np.hypot(*(ends1 - ends0).T)

        # Sample window of each radial group: where its chords can touch the FOV (plus one
        # pixel of bilinear support).
        reach = r_fov + pix
        windows = {}
        for g in range(RADIAL_GROUPS):
            sel = group_of_bin == g
            if not sel.any():
                continue
            half = np.sqrt(np.maximum(reach**2 - rho[sel] ** 2, 0.0))
            lengths = 2 * np.sqrt(radius**2 - rho[sel] ** 2)
            dt = float((half / lengths).max())
            m_lo = max(0, math.floor((0.5 - dt) * self.steps))
            m_hi = min(self.steps, math.ceil((0.5 + dt) * self.steps))
            windows[g] = (m_lo, m_hi + 1)
        self.windows = windows

        # T factor of each group: (ring pairs, samples x planes).
        r1, r2 = np.meshgrid(np.arange(self.rings), np.arange(self.rings), indexing="ij")
        self.ring1, self.ring2 = r1.ravel(), r2.ravel()
        z1, z2 = scanner.ring_z(self.ring1), scanner.ring_z(self.ring2)
        self.dz = torch.as_tensor(z2 - z1, dtype=self.dtype, device=self.device)
        self._t = {}
        for g, (m_lo, m_hi) in windows.items():
            self._t[g] = self._build_t(z1, z2, m_lo, m_hi)

        mask = self.image_grid.fov_mask().ravel()
        max_chords = max(1, lors_per_batch // (self.rings**2))
        self.chunks: list[Chunk] = []
        for s, g, lo, hi in spans:
            for c0 in range(lo, hi, max_chords):
                c1 = min(hi, c0 + max_chords)
                sf = self._build_s(ends0[c0:c1], ends1[c0:c1], windows[g], mask)
                self.chunks.append(
                    Chunk(
                        c0,
                        c1,
                        s,
                        g,
                        to_torch_csr(sf, self.device, self.dtype),
                        to_torch_csr(sf.T.tocsr(), self.device, self.dtype),
                        torch.as_tensor(chord_len[c0:c1], dtype=self.dtype, device=self.device),
                    )
                )
        log.info(
            "3D projector: %d chords x %d ring pairs = %.3g LORs, %d samples per LOR (windows %s), " "%d chunks, %s",
            self.n_chords,
            self.rings**2,
            self.n_chords * self.rings**2,
            self.steps + 1,
            {g: w[1] - w[0] for g, w in windows.items()},
            len(self.chunks),
            self.device,
        )

    # ----- construction -------------------------------------------------------------------
    def _build_t(self, z1, z2, m_lo, m_hi):
        import scipy.sparse as sp

        planes = self.image_grid.shape[0]
        dz_vox, oz = self.image_grid.voxel_mm[0], self.image_grid.origin_mm[0]
        m = np.arange(m_lo, m_hi)
        t = m / self.steps
        q = ((z1[:, None] + (z2 - z1)[:, None] * t[None, :]) - oz) / dz_vox  # (pairs, samples)
        i0 = np.floor(q).astype(np.int64)
        f = q - i0
        col_m = (m - m_lo)[None, :] * planes
        rows, cols, vals = [], [], []
        for di, w in ((0, 1 - f), (1, f)):
            i = i0 + di
            ok = (i >= 0) & (i < planes) & (w > 0)
            rows.append(np.broadcast_to(np.arange(len(z1))[:, None], q.shape)[ok])
            cols.append((col_m + i)[ok])
            vals.append(w[ok])
        mat = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(len(z1), len(m) * planes),
        )
        mat.sum_duplicates()
        return to_torch_csr(mat, self.device, self.dtype), to_torch_csr(mat.T.tocsr(), self.device, self.dtype)

    def _build_s(self, e0, e1, window, mask):
        """Bilinear weights (chords x samples, pixels) of the chords' sample points."""
        import scipy.sparse as sp

        _, ny, nx = self.image_grid.shape
        _, dy, dx = self.image_grid.voxel_mm
        _, oy, ox = self.image_grid.origin_mm
        m = np.arange(*window)
        t = m / self.steps
        pts = e0[:, None, :] + t[None, :, None] * (e1 - e0)[:, None, :]  # (chords, samples, 2) x, y
        fx = (pts[..., 0] - ox) / dx
        fy = (pts[..., 1] - oy) / dy
        ix0, iy0 = np.floor(fx).astype(np.int64), np.floor(fy).astype(np.int64)
        wx, wy = fx - ix0, fy - iy0
        row = np.arange(pts.shape[0] * pts.shape[1]).reshape(pts.shape[:2])
        rows, cols, vals = [], [], []
        for ky, wyk in ((0, 1 - wy), (1, wy)):
            for kx, wxk in ((0, 1 - wx), (1, wx)):
                iy, ix = iy0 + ky, ix0 + kx
                ok = (iy >= 0) & (iy < ny) & (ix >= 0) & (ix < nx)
                pix = np.where(ok, iy * nx + ix, 0)
                ok &= mask[pix] & (wyk * wxk > 0)
                rows.append(row[ok])
                cols.append(pix[ok])
                vals.append((wyk * wxk)[ok])
        mat = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(row.size, ny * nx),
        )
        mat.sum_duplicates()
        return mat

    # ----- geometry of the sinogram -------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        """(ring pairs, chords) of a 3D sinogram."""
        return self.rings**2, self.n_chords

    def subset_range(self, subset: int) -> tuple[int, int]:
        """Column range of one subset's chords."""
        ch = [c for c in self.chunks if c.subset == subset]
        return ch[0].lo, ch[-1].hi

    def bin_events(self, crystal1: np.ndarray, crystal2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """3D sinogram index of each coincidence.

        Params:
            crystal1, crystal2: CrystalIDs.
        Returns:
            (flat index ``pair * chords + position`` (int64), valid): valid is False for pairs in
            the same in-ring position and for chords that miss the field of view.
        """
        sc = self.scanner
        ra, ia = sc.ring_and_index(np.asarray(crystal1, dtype=np.int64))
        rb, ib = sc.ring_and_index(np.asarray(crystal2, dtype=np.int64))
        view, bin_, valid = self.geometry.cell_of_pair(ia, ib)
        nb = self.geometry.n_bins
        cell = np.where(valid, view * nb + bin_, 0)
        pos = self.position[cell]
        # The chord runs from crystal_a to crystal_b: put the ring of the event's end at a first.
        swap = ia != self.crystal_a[pos]
        r1 = np.where(swap, rb, ra)
        r2 = np.where(swap, ra, rb)
        return (r1 * self.rings + r2) * self.n_chords + pos, valid

    def histogram(self, crystal1: np.ndarray, crystal2: np.ndarray) -> tuple[np.ndarray, int]:
        """3D sinogram of coincidence counts, (ring pairs, chords) float32, and the number of
        coincidences in it."""
        flat, valid = self.bin_events(crystal1, crystal2)
        counts = np.bincount(flat[valid], minlength=self.shape[0] * self.shape[1])
        return counts.reshape(self.shape).astype(np.float32), int(valid.sum())

    def lor_endpoints(self) -> tuple[np.ndarray, np.ndarray]:
        """End points (ring pairs, chords, 3) as (x, y, z) mm of every LOR (for tests and the
        general projector)."""
        p0, p1 = self.geometry.endpoints()
        e0 = p0.reshape(-1, 2)[self.order]
        e1 = p1.reshape(-1, 2)[self.order]
        z1 = self.scanner.ring_z(self.ring1)
        z2 = self.scanner.ring_z(self.ring2)
        shape = (len(z1), len(e0))
        a = np.stack(
            [
                np.broadcast_to(e0[None, :, 0], shape),
                np.broadcast_to(e0[None, :, 1], shape),
                np.broadcast_to(z1[:, None], shape),
            ],
            -1,
        )
        b = np.stack(
            [
                np.broadcast_to(e1[None, :, 0], shape),
                np.broadcast_to(e1[None, :, 1], shape),
                np.broadcast_to(z2[:, None], shape),
            ],
            -1,
        )
        return a, b

    def obliquity(self):
        """(ring pairs, chords) ``cos^3`` of each LOR's angle to the transverse plane,
        ``(L_xy / L)^3``: the solid angle of a crystal face seen along an oblique LOR, relative
        to the direct LOR of the same chord (``osem3d``'s geometric normalisation)."""
        import torch

        out = torch.empty(self.shape, dtype=self.dtype, device=self.device)
        for ch in self.chunks:
            out[:, ch.lo : ch.hi] = (ch.chord_len[None, :] / (self._step(ch) * self.steps)) ** 3
        return out

    # ----- projection ---------------------------------------------------------------------
    def _step(self, chunk: Chunk):
        """(ring pairs, chords) step length along each LOR of a chunk, mm."""
        return (chunk.chord_len[None, :] ** 2 + self.dz[:, None] ** 2).sqrt() / self.steps

    def _planes_last(self, image):
        """(planes, ny, nx) -> (pixels, planes) contiguous, the right operand of ``S``."""
        return image.reshape(image.shape[0], -1).T.contiguous()

    def forward_chunk(self, xt, chunk: Chunk):
        """Line integrals of the LORs of one chunk: (ring pairs, chunk chords).

        Params:
            xt: the image as (pixels, planes) (see :meth:`prepare`)."""
        planes = xt.shape[1]
        t_fwd, _ = self._t[chunk.group]
        nc = chunk.hi - chunk.lo
        sheet = chunk.s_fwd @ xt  # (chords x samples, planes)
        sheet = sheet.view(nc, -1, planes).permute(1, 2, 0).reshape(-1, nc)  # (samples x planes, chords)
        return (t_fwd @ sheet) * self._step(chunk)

    def back_chunk(self, y, chunk: Chunk):
        """Adjoint of :meth:`forward_chunk`: (pixels, planes) from (ring pairs, chunk chords)."""
        planes = self.image_grid.shape[0]
        _, t_back = self._t[chunk.group]
        nc = chunk.hi - chunk.lo
        sheet = t_back @ (y * self._step(chunk))  # (samples x planes, chords)
        sheet = sheet.view(-1, planes, nc).permute(2, 0, 1).reshape(-1, planes)  # (chords x samples, planes)
        return chunk.s_back @ sheet

    def prepare(self, image):
        """The image in the layout the chunks read, (pixels, planes)."""
        return self._planes_last(image.to(self.device, self.dtype))

    def forward(self, image, subset: int | None = None):
        """``A x`` for every LOR (subset None, (ring pairs, chords)) or one subset's columns.

        Params:
            image: (planes, ny, nx) torch tensor.
        """
        import torch

        xt = self.prepare(image)
        lo, hi = (0, self.n_chords) if subset is None else self.subset_range(subset)
        out = torch.empty((self.rings**2, hi - lo), dtype=self.dtype, device=self.device)
        for ch in self.chunks:
            if subset is None or ch.subset == subset:
                out[:, ch.lo - lo : ch.hi - lo] = self.forward_chunk(xt, ch)
        return out

    def back(self, y, subset: int | None = None):
        """``A^T y``: y is (ring pairs, chords) (subset None) or one subset's columns;
        returns (planes, ny, nx)."""
        import torch

        planes, ny, nx = self.image_grid.shape
        lo = 0 if subset is None else self.subset_range(subset)[0]
        acc = torch.zeros((ny * nx, planes), dtype=self.dtype, device=self.device)
        for ch in self.chunks:
            if subset is None or ch.subset == subset:
                acc += self.back_chunk(y[:, ch.lo - lo : ch.hi - lo], ch)
        return acc.T.reshape(planes, ny, nx)
