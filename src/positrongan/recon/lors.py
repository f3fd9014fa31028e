"""Coincidences -> crystal pairs -> lines of response -> single-slice-rebinned sinograms.

Sinogram convention (exact, no angular mashing of different lines). Crystals of a ring sit at
azimuth ``2 pi i / N`` (``geometry/scanner.py``). The chord between crystals ``a`` and ``b`` has
its normal at ``pi (a + b) / N`` and lies at ``R cos(pi (b - a) / N)`` from the axis. With
``s = a + b``: if ``s < N`` then ``v = s`` and ``t = |b - a|``, else ``v = s - N`` and
``t = N - |b - a|``; the chord then joins the crystals ``(v - t) / 2`` and ``(v + t) / 2``
(mod N), its normal is at ``theta_v = pi v / N`` in [0, pi) and its signed distance is
``R cos(pi t / N)``. ``v`` and ``t`` have the same parity, so the pair of angles ``2k, 2k + 1``
forms view ``k`` (N/2 views) whose bins ``t`` alternate between the two angles (the usual
interleaved ring sinogram); every (view, bin) cell is exactly one chord. Bins whose chord
misses the image's circumscribed circle are dropped.

Axially, single-slice rebinning puts a pair of rings ``(r1, r2)`` in plane ``r1 + r2``
(2 rings - 1 planes at half the ring pitch, ``Scanner.plane_z``), keeping ring differences up
to ``max_ring_difference``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ArtifactError, ConfigError
from ..geometry.scanner import Scanner
from ..rootfile import open_tree

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SinogramGeometry:
    """Transaxial sampling of one rebinned plane.

    Attributes:
        crystals: crystals per ring N (even).
        radius_mm: radius of the LOR end points (inner radius + mean depth of interaction).
        t_lo, t_hi: range of the chord index ``t`` kept (inclusive).
    """

    crystals: int
    radius_mm: float
    t_lo: int
    t_hi: int

    @classmethod
    def for_grid(cls, scanner: Scanner, fov_mm: float, doi_mm: float) -> SinogramGeometry:
        """Keep every chord that crosses the square image of side ``fov_mm``.

        Params:
            scanner: the ring geometry.
            fov_mm: side of the transaxial image square.
            doi_mm: mean depth of interaction behind the crystal front face.
        Raises:
            ConfigError: odd crystal count, or a field of view that does not fit in the ring.
        """
        n = scanner.crystals_per_ring
        if n % 2:
            raise ConfigError(
                f"config key 'scanner.crystals_per_ring' = {n}: the ring sinogram needs an even number of crystals"
            )
        if fov_mm / 2 >= scanner.inner_radius_mm:
            raise ConfigError(
                f"config key 'reconstruction.fov_mm' = {fov_mm}: the image must fit inside the ring "
                f"(inner radius {scanner.inner_radius_mm:.1f} mm)"
            )
        radius = scanner.inner_radius_mm + doi_mm
        r_keep = min(fov_mm / math.sqrt(2.0), radius)
        t_lo = max(1, math.ceil(n / math.pi * math.acos(r_keep / radius) - 1e-9))
        return cls(crystals=n, radius_mm=radius, t_lo=t_lo, t_hi=n - t_lo)

    @property
    def n_views(self) -> int:
        return self.crystals // 2

    @property
    def n_bins(self) -> int:
        return self.t_hi - self.t_lo + 1

    @property
    def shape(self) -> tuple[int, int]:
        """(views, bins) of one plane."""
        return self.n_views, self.n_bins

    def cell_crystals(self) -> tuple[np.ndarray, np.ndarray]:
        """In-ring crystal indices (a, b) of every cell, each (views, bins)."""
        k = np.arange(self.n_views)[:, None]
        t = np.arange(self.t_lo, self.t_hi + 1)[None, :]
        v = 2 * k + (t % 2)
        n = self.crystals
        return ((v - t) // 2) % n, ((v + t) // 2) % n

    def endpoints(self) -> tuple[np.ndarray, np.ndarray]:
        """LOR end points (views, bins, 2) as (x, y) in mm."""
        a, b = self.cell_crystals()
        phi_a = 2 * np.pi * a / self.crystals
        phi_b = 2 * np.pi * b / self.crystals
        p0 = self.radius_mm * np.stack([np.cos(phi_a), np.sin(phi_a)], axis=-1)
        p1 = self.radius_mm * np.stack([np.cos(phi_b), np.sin(phi_b)], axis=-1)
        return p0, p1

    def radial_mm(self) -> np.ndarray:
        """Signed distance (bins,) of each bin's chord from the axis."""
        t = np.arange(self.t_lo, self.t_hi + 1)
        return self.radius_mm * np.cos(np.pi * t / self.crystals)

    def view_angle(self) -> np.ndarray:
        """Normal angle (views, bins) of each cell, radians in [0, pi)."""
        k = np.arange(self.n_views)[:, None]
        t = np.arange(self.t_lo, self.t_hi + 1)[None, :]
        return np.pi * (2 * k + (t % 2)) / self.crystals

    def cell_of_pair(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sinogram cell of crystal pairs.

        Params:
            a, b: in-ring crystal indices (arrays of equal length).
        Returns:
            (view, bin, valid): valid is False for a == b and for chords outside the kept bins.
        """
        n = self.crystals
        a = np.asarray(a, dtype=np.int64)
        b = np.asarray(b, dtype=np.int64)
        s = a + b
        d = np.abs(b - a)
        wrap = s >= n
        v = np.where(wrap, s - n, s)
        t = np.where(wrap, n - d, d)
        valid = (d > 0) & (t >= self.t_lo) & (t <= self.t_hi)
        return v // 2, t - self.t_lo, valid


def plane_weights(scanner: Scanner, max_ring_difference: int | None) -> np.ndarray:
    """Number of ordered ring pairs (r1, r2) rebinned into each plane.

    An oblique pair of crystals (a in r1, b in r2) and its mirror (a in r2, b in r1) are two
    physical lines of response in the same cell, so a plane's sensitivity scales with this count.

    Returns:
        (planes,) float32.
    """
    rings = scanner.rings
    dmax = rings - 1 if max_ring_difference is None else max_ring_difference
    r1, r2 = np.meshgrid(np.arange(rings), np.arange(rings), indexing="ij")
    keep = np.abs(r1 - r2) <= dmax
    return np.bincount((r1 + r2)[keep], minlength=scanner.n_planes).astype(np.float32)


def rebin(
    crystal1: np.ndarray,
    crystal2: np.ndarray,
    scanner: Scanner,
    geom: SinogramGeometry,
    max_ring_difference: int | None,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, dict]:
    """Single-slice rebinning of crystal pairs into sinograms.

    Params:
        crystal1, crystal2: CrystalIDs of each coincidence.
        scanner: geometry (CrystalID convention).
        geom: transaxial sampling.
        max_ring_difference: largest |r1 - r2| kept (None: all).
        weights: per coincidence, its weight in the sinogram (None: counts).
    Returns:
        (sinogram (planes, views, bins) float32 counts, stats dict with the counts kept and
        dropped for each reason).
    """
    r1, i1 = scanner.ring_and_index(np.asarray(crystal1, dtype=np.int64))
    r2, i2 = scanner.ring_and_index(np.asarray(crystal2, dtype=np.int64))
    view, bin_, valid = geom.cell_of_pair(i1, i2)
    dmax = scanner.rings - 1 if max_ring_difference is None else max_ring_difference
    ring_ok = np.abs(r1 - r2) <= dmax
    same = i1 == i2
    keep = valid & ring_ok
    plane = (r1 + r2)[keep]
    nv, nb = geom.shape
    flat = (plane * nv + view[keep]) * nb + bin_[keep]
    w = None if weights is None else np.asarray(weights, np.float64)[keep]
    sino = np.bincount(flat, weights=w, minlength=scanner.n_planes * nv * nb).astype(np.float32)
    stats = {
        "input": len(r1),
        "kept": int(keep.sum()),
        "dropped_ring_difference": int((~ring_ok).sum()),
        "dropped_same_crystal_index": int((same & ring_ok).sum()),
        "dropped_outside_fov": int((~valid & ~same & ring_ok).sum()),
    }
    return sino.reshape(scanner.n_planes, nv, nb), stats


def _crystal_ids(tree, suffix: str, scanner: Scanner, path: Path, name: str) -> np.ndarray:
    """CrystalID{suffix} of a tree, or derived from PostPosition when the branch is absent
    (a GATE file written by another digitizer)."""
    keys = set(tree.keys())
    branch = f"CrystalID{suffix}"
    if branch in keys:
        ids = tree[branch].array(library="np").astype(np.int64)
    else:
        pos = [f"PostPosition_{c}{suffix}" for c in "XYZ"]
        if not set(pos) <= keys:
            raise ArtifactError(
                f"{path}: tree '{name}' has neither {branch} nor {'/'.join(pos)}; cannot find the crystals"
            )
        x, y, z = (tree[p].array(library="np").astype(np.float64) for p in pos)
        ids = scanner.locate(x, y, z)
        log.info("%s:%s: %s derived from PostPosition (no %s branch)", path.name, name, branch, branch)
    return ids


def read_coincidences(
    path: str | Path, scanner: Scanner, tree_name: str = "Coincidences"
) -> tuple[np.ndarray, np.ndarray]:
    """CrystalID pairs of one coincidence tree of a GATE-schema ROOT file.

    Params:
        path: the ROOT file.
        scanner: geometry used to check ids (and to locate crystals from positions).
        tree_name: ``Coincidences`` (prompts) or ``Delayed``.
    Returns:
        (crystal1, crystal2) int64 arrays; pairs outside the axial extent are dropped.
    Raises:
        ArtifactError: naming the file, when it is missing, not ROOT, lacks the tree or the
            branches, holds no coincidence, or has ids outside the configured scanner.
    """
    path = Path(path)
    with open_tree(path, tree_name) as tree:
        if tree.num_entries == 0:
            raise ArtifactError(f"{path}: tree '{tree_name}' holds no coincidences")
        c1 = _crystal_ids(tree, "1", scanner, path, tree_name)
        c2 = _crystal_ids(tree, "2", scanner, path, tree_name)
    ok = (c1 >= 0) & (c2 >= 0)
    if (~ok).any():
        log.warning("%s:%s: %d pairs outside the scanner's axial extent dropped", path.name, tree_name, (~ok).sum())
    c1, c2 = c1[ok], c2[ok]
    top = max(int(c1.max(initial=-1)), int(c2.max(initial=-1)))
    if top >= scanner.n_crystals:
        raise ArtifactError(
            f"{path}: CrystalID {top} but the configured scanner has {scanner.n_crystals} crystals; "
            "was it simulated with another scanner config?"
        )
    return c1, c2


def has_tree(path: str | Path, tree_name: str) -> bool:
    """Whether a ROOT file holds a tree of this name with at least one entry."""
    import uproot

    with uproot.open(path) as fh:
        return tree_name in fh and fh[tree_name].num_entries > 0
