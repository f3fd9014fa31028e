"""Box crystals of the scanner, as the GATE scene builds them, for ray tracing in the fast engines.

Crystal ``(ring j, index i)`` is a box (:func:`.settings.crystal_box_mm`: radial depth D,
tangential width w, axial width h) centred at radius R + D / 2 (R: inner radius), azimuth
``phi_i = 2 pi i / n`` and ring centre z_j. In its own frame (radial ``e_i``, tangential ``t_i``,
axial) it is the slab product ``R <= p.e_i <= R + D``, ``|p.t_i| <= w / 2``, ``|z - z_j| <= h / 2``.

Every box lies inside its *cell*, the azimuthal sector ``|phi - phi_i| <= pi / n`` times the ring
slab ``|z - z_j| <= pitch / 2`` (the front corners, the widest part, sit at azimuth
``atan(w / 2R) < pi / n``). Along a straight ray the azimuth is monotone (the angular momentum
``x uy - y ux`` is constant) and so is z, so the ray visits cells in order: :func:`next_box` walks
them from the current point and tests only the one box of each cell, crossing the bore when the
ray passes through it (a photon scattered back out of a crystal can reach the opposite side, as
in Geant4). The gaps between boxes are air, in which nothing interacts.

The numpy engine walks the cells this way. The compiled engine (:mod:`.fast_numba`) does not
walk: it flies Woodcock steps through the shell that holds every box and, at each collision
point, tests the one box of the point's cell, the same fact in another use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .settings import crystal_box_mm

EPS_MM = 1e-7  # step past a cell boundary (far below any dimension; float64 positions ~1e-14 mm)
MAX_WALK = 512  # cells one search may visit (a chord grazing the ring crosses ~70 sectors and rings)


@dataclass(frozen=True)
class BoxRing:
    """Geometry constants of the box crystals of a scanner."""

    n: int  # crystals per ring
    rings: int
    r_in: float  # radius of the front faces (mm)
    depth: float  # radial depth (mm)
    half_w: float  # half the tangential width (mm)
    half_h: float  # half the axial width (mm)
    pitch: float  # axial pitch (mm)

    @classmethod
    def from_scanner(cls, scanner) -> "BoxRing":
        depth, width, axial = crystal_box_mm(scanner)
        return cls(
            scanner.crystals_per_ring,
            scanner.rings,
            scanner.inner_radius_mm,
            depth,
            width / 2,
            axial / 2,
            scanner.axial_pitch_mm,
        )

    @property
    def r_max(self) -> float:
        """Radius of the back corners: no crystal lies beyond it."""
        return math.hypot(self.r_in + self.depth, self.half_w)

    @property
    def z_half(self) -> float:
        """Half the axial extent of the rings."""
        return self.rings * self.pitch / 2

    def packed(self) -> np.ndarray:
        """The constants as a float64 vector (n, rings, r_in, depth, half_w, half_h, pitch, r_max, z_half)
        for the compiled kernels."""
        return np.array(
            [self.n, self.rings, self.r_in, self.depth, self.half_w, self.half_h, self.pitch, self.r_max, self.z_half]
        )

    def lyso_fraction(self) -> float:
        """Volume of the boxes over the volume of the gapless annulus of the same radii and length."""
        boxes = self.n * self.rings * self.depth * 2 * self.half_w * 2 * self.half_h
        ring = math.pi * ((self.r_in + self.depth) ** 2 - self.r_in**2) * self.rings * self.pitch
        return boxes / ring


def _slab(p: np.ndarray, u: np.ndarray, lo: float | np.ndarray, hi: float | np.ndarray):
    """Entry and exit parameters of the ray p + t u in the slab lo <= x <= hi (u == 0: all t, or none)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ta = (lo - p) / u
        tb = (hi - p) / u
    t0 = np.fmin(ta, tb)
    t1 = np.fmax(ta, tb)
    zero = u == 0
    if zero.any():
        inside = (p >= lo) & (p <= hi)
        t0 = np.where(zero, np.where(inside, -np.inf, np.inf), t0)
        t1 = np.where(zero, np.where(inside, np.inf, -np.inf), t1)
    return t0, t1


def box_interval(g: BoxRing, p: np.ndarray, u: np.ndarray, index: np.ndarray, ring: np.ndarray):
    """(t0, t1): the ray p + t u (p, u: (3, m)) is inside box (ring, index) for t0 <= t <= t1 (empty
    when t0 >= t1)."""
    phi = 2 * np.pi * index / g.n
    c, s = np.cos(phi), np.sin(phi)
    pr, ur = p[0] * c + p[1] * s, u[0] * c + u[1] * s
    pt, ut = p[1] * c - p[0] * s, u[1] * c - u[0] * s
    pz = p[2] - (ring - (g.rings - 1) / 2) * g.pitch
    a0, a1 = _slab(pr, ur, g.r_in, g.r_in + g.depth)
    b0, b1 = _slab(pt, ut, -g.half_w, g.half_w)
    c0, c1 = _slab(pz, u[2], -g.half_h, g.half_h)
    return np.maximum(np.maximum(a0, b0), c0), np.minimum(np.minimum(a1, b1), c1)


def cell_of(g: BoxRing, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index, ring) of the cell holding each point (ring may be out of 0 .. rings-1)."""
    phi = np.mod(np.arctan2(p[1], p[0]), 2 * np.pi)
    index = np.rint(phi * g.n / (2 * np.pi)).astype(np.int64) % g.n
    ring = np.floor(p[2] / g.pitch + g.rings / 2).astype(np.int64)
    return index, ring


def next_box(g: BoxRing, p: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first crystal the ray p + t u (t >= 0) enters, for many rays at once.

    Params:
        g: the crystals.
        p, u: (3, m) points and unit directions.
    Returns:
        (t_in, t_out, crystal): the ray is inside CrystalID ``crystal`` for t_in <= t <= t_out;
        crystal -1 (t nan) when it meets none.
    """
    m = p.shape[1]
    t = np.zeros(m)
    t_in = np.full(m, np.nan)
    t_out = np.full(m, np.nan)
    crystal = np.full(m, -1, np.int64)
    act = np.arange(m)
    r_in2, r_max2 = g.r_in**2, g.r_max**2
    for _ in range(MAX_WALK):
        if not act.size:
            break
        q = p[:, act] + u[:, act] * t[act]
        ua = u[:, act]
        x, y, z = q
        ux, uy, uz = ua
        a = ux * ux + uy * uy
        b = x * ux + y * uy
        r2 = x * x + y * y
        flat = a < 1e-15
        gone = ((r2 >= r_max2) & (b >= 0)) | ((np.abs(z) >= g.z_half) & (z * uz >= 0)) | (flat & (r2 < r_in2))
        step = np.full(act.size, np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            # Outside the axial extent, moving in: jump to the end plane.
            outz = (np.abs(z) >= g.z_half) & ~gone
            step[outz] = (np.abs(z[outz]) - g.z_half) / np.abs(uz[outz])
            # In the bore: cross it to the inner circle (no crystal there).
            bore = (r2 < r_in2) & ~gone & ~outz
            disc = b * b - a * (r2 - r_in2)
            step[bore] = (np.sqrt(np.maximum(disc[bore], 0.0)) - b[bore]) / a[bore]
            shell = ~(gone | outz | bore)
            k = np.flatnonzero(shell)
            index, ring = cell_of(g, q[:, k])
            valid = (ring >= 0) & (ring < g.rings)
            t0, t1 = box_interval(g, q[:, k], ua[:, k], index, np.clip(ring, 0, g.rings - 1))
            t0 = np.maximum(t0, 0.0)
            hit = valid & (t1 > t0 + 1e-12)
            kh = k[hit]
            found = act[kh]
            t_in[found] = t[found] + t0[hit]
            t_out[found] = t[found] + t1[hit]
            crystal[found] = ring[hit] * g.n + index[hit]
            # No box in this cell: go to the next cell boundary (azimuth, ring plane, inner or outer circle).
            km = k[~hit]
            i_m, j_m = index[~hit], ring[~hit]
            xm, ym, zm, uxm, uym, uzm = x[km], y[km], z[km], ux[km], uy[km], uz[km]
            ang = xm * uym - ym * uxm
            phi_b = (i_m + np.where(ang > 0, 0.5, -0.5)) * (2 * np.pi / g.n)
            nx, ny = -np.sin(phi_b), np.cos(phi_b)
            den = uxm * nx + uym * ny
            t_az = -(xm * nx + ym * ny) / den
            t_az = np.where((ang != 0) & (t_az > 0), t_az, np.inf)
            zb = (j_m + np.where(uzm > 0, 1.0, 0.0) - g.rings / 2) * g.pitch
            t_z = np.where(uzm != 0, (zb - zm) / uzm, np.inf)
            t_z = np.where(t_z > 0, t_z, np.inf)
            am, bm, rm = a[km], b[km], r2[km]
            t_out_c = (np.sqrt(np.maximum(bm * bm - am * (rm - r_max2), 0.0)) - bm) / am
            d_in = bm * bm - am * (rm - r_in2)
            t_in_c = np.where((bm < 0) & (d_in > 0), (-bm - np.sqrt(np.maximum(d_in, 0.0))) / am, np.inf)
            step[km] = np.fmin(np.fmin(t_az, t_z), np.fmin(t_out_c, t_in_c))
        keep = ~gone & np.isfinite(step)
        keep[k[hit]] = False
        t[act[keep]] += step[keep] + EPS_MM
        act = act[keep]
    return t_in, t_out, crystal
