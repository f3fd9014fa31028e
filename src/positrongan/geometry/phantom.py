"""The "anisotropic" aluminium tube phantom filled with F-18 in water, and its defects.

Geometry (DESIGN.md §4). The tube is a pipe section along the scanner axis z, centred, with
open ends. In the tube's local frame (the bend removed and the section rotated by ``psi``):
- the outer surface is an ellipse with semi-axes (a, b): along azimuth phi its radius is
  r_out(phi) = a b / sqrt((b cos phi)^2 + (a sin phi)^2);
- the wall is thicker on one side: t(phi) = t0 (1 + v cos(phi - phi0)), r_in = r_out - t;
- the axis bends in a circular arc of sagitta s (parabolic approximation, s << length) in
  direction beta: the section centre sits at s (1 - (2 z / L)^2) (cos beta, sin beta).

Defects, drawn per scan from its seed:
- crack (label 1): a radial slit of constant width w through the whole wall, extent l along z;
  the fluid fills it (activity, water attenuation);
- pit (label 2): wall loss from the inside, a ball of radius R centred on the inner surface,
  cut at depth f t(phi); the fluid fills it;
- blockage (label 3): a deposit growing from the wall into the lumen, an ellipsoid of section
  radius R and length l; no activity, attenuating (``deposit_material``);
- bubble (label 4): a gas ball in the fluid; no activity, (almost) no attenuation.

Material ids used everywhere: 0 air, 1 fluid (water + F-18), 2 aluminium, 3 deposit, 4 gas.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Mapping

import numpy as np

from .grid import ReconGrid

AIR, FLUID, WALL, DEPOSIT, GAS = 0, 1, 2, 3, 4
DEFECT_LABELS = {"crack": 1, "pit": 2, "blockage": 3, "bubble": 4}


@dataclass(frozen=True)
class Defect:
    """One defect as drawn. Angles in radians (local frame), lengths in mm.

    Attributes:
        type: crack, pit, blockage or bubble.
        centre_mm: (x, y, z) of its centre in scanner coordinates.
        size: its sizes (crack: width_mm, length_mm, wall_mm; pit: radius_mm, depth_fraction, depth_mm,
            wall_mm; blockage: radius_mm, length_mm; bubble: radius_mm). wall_mm is the wall's
            thickness at the defect's azimuth.
        phi: azimuth in the tube's local frame (cracks, pits, blockages).
        local_centre: (u, v, z) centre in the local frame.
    """

    type: str
    centre_mm: tuple[float, float, float]
    size: dict
    phi: float = 0.0
    local_centre: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def to_json(self) -> dict:
        d = asdict(self)
        d["label"] = DEFECT_LABELS[self.type]
        return d


@dataclass
class TubePhantom:
    """The tube and its defects; classifies points into materials and defect labels.

    Attributes mirror the module docstring; build one with :meth:`draw`.
    """

    length_mm: float
    a_mm: float
    b_mm: float
    wall_mm: float
    wall_variation: float
    wall_phase: float
    psi: float
    bend_mm: float
    bend_direction: float
    deposit_material: str
    defects: list[Defect] = field(default_factory=list)

    def __post_init__(self):
        self._c0, self._s0 = math.cos(self.wall_phase), math.sin(self.wall_phase)

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def draw(cls, phantom_cfg: Mapping, rng: np.random.Generator) -> "TubePhantom":
        """Draw a tube shape and its defects from the ``phantom`` config section.

        Params:
            phantom_cfg: the ``phantom`` section.
            rng: a Generator seeded for this scan.
        Returns:
            The phantom.
        """
        a, b = phantom_cfg["outer_semi_axes_mm"]
        tube = cls(
            length_mm=float(phantom_cfg["length_mm"]),
            a_mm=float(a),
            b_mm=float(b),
            wall_mm=float(phantom_cfg["wall_thickness_mm"]),
            wall_variation=float(phantom_cfg["wall_variation"]),
            wall_phase=float(rng.uniform(0, 2 * math.pi)),
            psi=float(rng.uniform(0, math.pi)),
            bend_mm=float(rng.uniform(*phantom_cfg["bend_mm"])),
            bend_direction=float(rng.uniform(0, 2 * math.pi)),
            deposit_material=phantom_cfg["deposit_material"],
        )
        # A lumen for every draw (wall phase) is a config rule (config.py), checked before any job.
        d = phantom_cfg["defects"]
        for kind, spec in (
            ("crack", d["cracks"]),
            ("pit", d["pits"]),
            ("blockage", d["blockages"]),
            ("bubble", d["bubbles"]),
        ):
            n = int(rng.integers(spec["count"][0], spec["count"][1] + 1))
            for _ in range(n):
                tube.defects.append(tube._draw_defect(kind, spec, rng))
        return tube

    def _draw_defect(self, kind: str, spec: Mapping, rng: np.random.Generator) -> Defect:
        half = self.length_mm / 2
        phi = float(rng.uniform(0, 2 * math.pi))
        rin = float(self.r_in(np.array(phi)))
        rout = float(self.r_out(np.array(phi)))
        if kind == "crack":
            w, ln = float(rng.uniform(*spec["width_mm"])), float(rng.uniform(*spec["length_mm"]))
            z = float(rng.uniform(-half + ln / 2, half - ln / 2)) if ln < self.length_mm else 0.0
            r = (rin + rout) / 2
            local = (r * math.cos(phi), r * math.sin(phi), z)
            size = {"width_mm": w, "length_mm": ln, "wall_mm": rout - rin}
        elif kind == "pit":
            rad, f = float(rng.uniform(*spec["radius_mm"])), float(rng.uniform(*spec["depth_fraction"]))
            z = float(rng.uniform(-half + rad, half - rad))
            local = (rin * math.cos(phi), rin * math.sin(phi), z)
            size = {"radius_mm": rad, "depth_fraction": f, "depth_mm": f * (rout - rin), "wall_mm": rout - rin}
        elif kind == "blockage":
            rad, ln = float(rng.uniform(*spec["radius_mm"])), float(rng.uniform(*spec["length_mm"]))
            rad = min(rad, 0.9 * float(self.r_in(np.linspace(0, 2 * np.pi, 361)).min()))
            z = float(rng.uniform(-half + ln / 2, half - ln / 2)) if ln < self.length_mm else 0.0
            rc = max(rin - rad, 0.0)  # grows from the wall inwards
            local = (rc * math.cos(phi), rc * math.sin(phi), z)
            size = {"radius_mm": rad, "length_mm": ln}
        else:  # bubble: anywhere in the lumen, wholly inside it
            rad = float(rng.uniform(*spec["radius_mm"]))
            rmin = float(self.r_in(np.linspace(0, 2 * np.pi, 361)).min())
            rad = min(rad, 0.9 * rmin)
            rc = float(rng.uniform(0, max(rmin - rad, 0.0)))
            z = float(rng.uniform(-half + rad, half - rad))
            local = (rc * math.cos(phi), rc * math.sin(phi), z)
            size = {"radius_mm": rad}
        centre = self.to_global(np.array([local[0]]), np.array([local[1]]), np.array([local[2]]))
        return Defect(kind, tuple(float(c[0]) for c in centre), size, phi, local)

    # ---- shape -------------------------------------------------------------------------------

    def r_out(self, phi: np.ndarray) -> np.ndarray:
        """Outer radius (mm) along local azimuth phi."""
        return self.a_mm * self.b_mm / np.sqrt((self.b_mm * np.cos(phi)) ** 2 + (self.a_mm * np.sin(phi)) ** 2)

    def wall(self, phi: np.ndarray) -> np.ndarray:
        """Wall thickness (mm) along local azimuth phi (t0 (1 + v cos(phi - phi0)))."""
        return self.wall_mm * (1.0 + self.wall_variation * np.cos(phi - self.wall_phase))

    def r_in(self, phi: np.ndarray) -> np.ndarray:
        """Inner radius (mm) along local azimuth phi."""
        return self.r_out(phi) - self.wall(phi)

    def axis_offset(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(dx, dy) of the section centre at height z (mm)."""
        zz = np.asarray(z) * (2.0 / self.length_mm)
        zz = np.minimum(zz, 1.0, out=zz if zz.ndim else None)
        zz = np.maximum(zz, -1.0, out=zz if zz.ndim else None)
        zz *= zz
        s = self.bend_mm - self.bend_mm * zz
        return s * math.cos(self.bend_direction), s * math.sin(self.bend_direction)

    def to_local(self, x, y, z) -> tuple[np.ndarray, np.ndarray]:
        """Scanner (x, y, z) -> local section coordinates (u, v)."""
        c, s = math.cos(self.psi), math.sin(self.psi)
        if self.bend_mm == 0.0:
            xl, yl = np.asarray(x), np.asarray(y)
        else:
            dx, dy = self.axis_offset(z)
            xl, yl = x - dx, y - dy
        u = xl * c
        u += yl * s
        v = yl * c
        v -= xl * s
        return u, v

    def to_global(self, u, v, z) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Local (u, v, z) -> scanner (x, y, z)."""
        c, s = math.cos(self.psi), math.sin(self.psi)
        dx, dy = self.axis_offset(z)
        return u * c - v * s + dx, u * s + v * c + dy, np.asarray(z, dtype=np.float64)

    @property
    def bounding_radius_mm(self) -> float:
        """Radius of a z-cylinder that contains the whole tube (for transport)."""
        return max(self.a_mm, self.b_mm) + abs(self.bend_mm) + 1.0

    @property
    def materials(self) -> list[str]:
        """Material names by id (for :class:`positrongan.simulate.materials.MaterialTable`)."""
        return ["Air", "Water", "Al", self.deposit_material, "Air"]

    # ---- classification ---------------------------------------------------------------------

    def classify_local(self, u: np.ndarray, v: np.ndarray, z: np.ndarray, labels: bool = False):
        """Material id (and optionally defect label and index) of points in local coordinates.

        Params:
            u, v, z: local coordinates (mm), same shape.
            labels: also return the defect label map and the defect index map.
        Returns:
            material (uint8); with ``labels`` also the label array (uint8, 0 none) and the index
            array (uint8, 0 none, k + 1 for ``defects[k]``; a later defect overwrites an earlier one).
        """
        u, v, z = np.broadcast_arrays(u, v, z)
        shape = u.shape
        u, v, z = (np.asarray(c, dtype=np.float64).ravel() for c in (u, v, z))
        uu = u * u
        vv = v * v
        r = uu + vv
        centre = np.flatnonzero(r <= 0)
        np.sqrt(r, out=r)
        a, b = self.a_mm, self.b_mm
        # Along the ray through (u, v): r_out = a b r / sqrt(b^2 u^2 + a^2 v^2); no trigonometry.
        with np.errstate(divide="ignore", invalid="ignore"):
            uu *= b * b
            vv *= a * a
            uu += vv
            np.sqrt(uu, out=uu)
            rout = np.divide(r, uu, out=uu)
            rout *= a * b
            # t = t0 (1 + v cos(phi - phi0)), cos(phi - phi0) = (u c0 + v s0) / r
            t = u * (self.wall_mm * self.wall_variation * self._c0)
            t += v * (self.wall_mm * self.wall_variation * self._s0)
            t /= r
            t += self.wall_mm
        if centre.size:
            rout[centre] = min(a, b)
            t[centre] = self.wall_mm * (1.0 + self.wall_variation)
        rin = rout - t
        inside_z = np.abs(z) <= self.length_mm / 2
        lumen = r < rin
        lumen &= inside_z
        wall = r >= rin
        wall &= inside_z
        wall &= r <= rout
        # Disjoint masks: the material id by arithmetic (cheaper than masked assignments).
        mat = lumen.view(np.uint8) * np.uint8(FLUID) + wall.view(np.uint8) * np.uint8(WALL)
        lab = np.zeros(r.shape, dtype=np.uint8) if labels else None
        index = np.zeros(r.shape, dtype=np.uint8) if labels else None
        for k, d in enumerate(self.defects):
            cu, cv, cz = d.local_centre
            # Every defect is bounded in z: test only the points in its z range (few).
            if d.type == "crack" or d.type == "blockage":
                ext = d.size["length_mm"] / 2
            else:
                ext = d.size["radius_mm"]
            j = np.flatnonzero(np.abs(z - cz) <= ext)
            if not j.size:
                continue
            uj, vj, zj = u.take(j), v.take(j), z.take(j)
            if d.type == "crack":
                # A slit of constant width: distance to the radial half-plane at azimuth phi.
                cp, sp = math.cos(d.phi), math.sin(d.phi)
                perp = np.abs(uj * sp - vj * cp)
                ahead = uj * cp + vj * sp > 0
                hit = wall.take(j) & ahead & (perp <= d.size["width_mm"] / 2)
                code = FLUID
            elif d.type == "pit":
                rad = d.size["radius_mm"]
                near = (uj - cu) ** 2 + (vj - cv) ** 2 + (zj - cz) ** 2 <= rad * rad
                hit = wall.take(j) & near & (r.take(j) - rin.take(j) <= d.size["depth_fraction"] * t.take(j))
                code = FLUID
            elif d.type == "blockage":
                rad, half = d.size["radius_mm"], d.size["length_mm"] / 2
                hit = lumen.take(j) & (((uj - cu) ** 2 + (vj - cv) ** 2) / (rad * rad) + ((zj - cz) / half) ** 2 <= 1.0)
                code = DEPOSIT
            else:
                rad = d.size["radius_mm"]
                hit = lumen.take(j) & ((uj - cu) ** 2 + (vj - cv) ** 2 + (zj - cz) ** 2 <= rad * rad)
                code = GAS
            jh = j[hit]
            mat[jh] = code
            if labels:
                lab[jh] = DEFECT_LABELS[d.type]
                index[jh] = k + 1
        mat = mat.reshape(shape)
        if labels:
            return mat, lab.reshape(shape), index.reshape(shape)
        return mat

    def classify(self, x: np.ndarray, y: np.ndarray, z: np.ndarray, labels: bool = False):
        """Material id (and optionally defect label and index) of points in scanner coordinates (mm)."""
        u, v = self.to_local(x, y, z)
        return self.classify_local(u, v, z, labels)

    def sample_fluid(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n points (n, 3) uniformly distributed in the fluid (cracks and pits included).

        Rejection sampling in the local bounding box of the section, then mapped to scanner
        coordinates; the local map is a rigid motion per z, so uniformity is preserved.
        """
        out = np.empty((n, 3))
        got = 0
        half = self.length_mm / 2
        while got < n:
            m = int((n - got) * 1.8) + 64
            u = rng.uniform(-self.a_mm, self.a_mm, m)
            v = rng.uniform(-self.b_mm, self.b_mm, m)
            z = rng.uniform(-half, half, m)
            j = np.flatnonzero(self.classify_local(u, v, z) == FLUID)[: n - got]
            k = j.size
            x, y, zz = self.to_global(u.take(j), v.take(j), z.take(j))
            out[got : got + k, 0], out[got : got + k, 1], out[got : got + k, 2] = x, y, zz
            got += k
        return out

    def describe(self) -> dict:
        """The drawn parameters as JSON-able data (for ``sim/{scan}.json``)."""
        return {
            "length_mm": self.length_mm,
            "outer_semi_axes_mm": [self.a_mm, self.b_mm],
            "wall_thickness_mm": self.wall_mm,
            "wall_variation": self.wall_variation,
            "wall_phase_rad": self.wall_phase,
            "section_rotation_rad": self.psi,
            "bend_sagitta_mm": self.bend_mm,
            "bend_direction_rad": self.bend_direction,
            "deposit_material": self.deposit_material,
            "materials": self.materials,
        }


def truth_maps(tube: TubePhantom, recon_grid: ReconGrid, mu_511: np.ndarray, sub: int = 2) -> dict[str, np.ndarray]:
    """Activity, attenuation and defect-label volumes on the reconstruction grid.

    Each voxel is sampled on a ``sub`` x ``sub`` x ``sub`` sub-grid: activity and mu are the
    sub-sample means (partial volume), the label is the most frequent non-zero sub-sample label.

    Params:
        tube: the phantom.
        recon_grid: the reconstruction grid (planes, voxels, field of view).
        mu_511: (5,) attenuation coefficient (1/mm) of each material id at 511 keV.
        sub: sub-samples per axis.
    Returns:
        dict with ``activity``, ``mu`` (float32), ``defects`` (uint8 type labels) and
        ``defect_index`` (uint8, k + 1 for ``tube.defects[k]``), each (planes, grid, grid) indexed
        [z, y, x]; ``defect_list`` (the defects as a JSON string, in index order); ``voxel_mm`` and
        ``origin_mm`` in (z, y, x) order.
    """
    grid = recon_grid.grid
    plane_z = recon_grid.plane_z
    plane_mm = recon_grid.plane_mm
    vox = recon_grid.pixel_mm
    centres = recon_grid.centres_mm
    offs = (np.arange(sub) + 0.5) / sub - 0.5
    xs = (centres[:, None] + offs[None, :] * vox).ravel()  # (grid*sub,)
    yy, xx = np.meshgrid(xs, xs, indexing="ij")
    n_planes = len(plane_z)
    activity = np.zeros((n_planes, grid, grid), np.float32)
    mu = np.zeros((n_planes, grid, grid), np.float32)
    labels = np.zeros((n_planes, grid, grid), np.uint8)
    index = np.zeros((n_planes, grid, grid), np.uint8)
    n_cat = len(tube.defects) + 1
    mu_511 = np.asarray(mu_511, dtype=np.float64)
    # Voxel (row-major y, x) of each transaxial sub-sample, for the label histogram.
    vox_id = (np.arange(grid).repeat(sub)[:, None] * grid + np.arange(grid).repeat(sub)[None, :]).ravel()
    nsub = sub**3
    # Sub-samples beyond the tube's bounding radius are air in every plane: classify the others only.
    rb = tube.bounding_radius_mm
    near = np.flatnonzero((xx * xx + yy * yy <= rb * rb).ravel())
    x_near, y_near = xx.ravel().take(near)[None], yy.ravel().take(near)[None]
    for p, zc in enumerate(plane_z):
        if abs(zc) - plane_mm / 2 > tube.length_mm / 2:
            mu[p] = mu_511[AIR]
            continue
        # All sub-planes of the plane at once: (sub, grid*sub, grid*sub).
        zz = np.broadcast_to((zc + offs * plane_mm)[:, None], (sub, near.size))
        m_near, l_near, i_near = tube.classify(x_near, y_near, zz, labels=True)
        mat = np.full((sub, xx.size), AIR, np.uint8)
        lab = np.zeros((sub, xx.size), np.uint8)
        idx = np.zeros((sub, xx.size), np.uint8)
        mat[:, near] = m_near
        lab[:, near] = l_near
        idx[:, near] = i_near
        # (sub, grid*sub, grid*sub) -> (sub, grid, sub, grid, sub) -> per-voxel sums
        activity[p] = (mat == FLUID).reshape(sub, grid, sub, grid, sub).sum(axis=(0, 2, 4)) / nsub
        mu[p] = mu_511[mat].reshape(sub, grid, sub, grid, sub).sum(axis=(0, 2, 4)) / nsub
        if lab.any():
            counts = np.bincount(
                (np.broadcast_to(vox_id, (sub, vox_id.size)).ravel() * 5 + lab.reshape(-1)), minlength=grid * grid * 5
            ).reshape(grid, grid, 5)[:, :, 1:]
            best = counts.argmax(axis=2) + 1
            labels[p] = np.where(counts.max(axis=2) > 0, best, 0)
            # The same vote per defect, so each defect can be scored on its own.
            votes = np.bincount(
                np.broadcast_to(vox_id, (sub, vox_id.size)).ravel() * n_cat + idx.reshape(-1),
                minlength=grid * grid * n_cat,
            ).reshape(grid, grid, n_cat)[:, :, 1:]
            index[p] = np.where(votes.max(axis=2) > 0, votes.argmax(axis=2) + 1, 0)
    return {
        "activity": activity,
        "mu": mu,
        "defects": labels,
        "defect_index": index,
        "defect_list": np.array(json.dumps([d.to_json() for d in tube.defects])),
        "voxel_mm": np.array([plane_mm, vox, vox], np.float32),
        "origin_mm": np.array([plane_z[0], centres[0], centres[0]], np.float32),
    }
