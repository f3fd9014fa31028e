"""F-18 positron range: where a positron annihilates, given where it was emitted.

Model: Levin & Hoffman (1999), "Calculation of positron range and its effect on the fundamental
limit of positron emission tomography system spatial resolution", Phys. Med. Biol. 44, 781-799,
Table 1 (F-18 in water, Monte Carlo of the positron trajectories): the 1D projected distribution
of the annihilation points is ``C exp(-k1 |x|) + (1 - C) exp(-k2 |x|)`` with C = 0.516,
k1 = 37.9 /mm, k2 = 3.10 /mm (FWHM 0.102 mm, FWTM 1.03 mm).

From the 1D profile to 3D: for an isotropic 3D distribution, a 1D projection ``exp(-k |x|)`` is
produced exactly by a radial distance r with density ``k^2 r exp(-k r)`` (gamma of shape 2 and
scale 1/k: the radial density per unit volume is ``-p'(r) / (2 pi r)``). The profile is therefore
sampled as a mixture of two gamma(2) radial distances, the first with probability
``(C / k1) / (C / k1 + (1 - C) / k2)`` (the components' areas). Its mean 3D range is 0.60 mm,
the published F-18 mean in water.

Materials: the range in g/cm^2 hardly depends on the (low-Z) material, so the distance drawn in
water is scaled by 1 / density in each material the straight path crosses (as PeneloPET-based
models do, Cal-Gonzalez et al. 2013, Phys. Med. Biol. 58, 5127: ranges in bone and lung follow
the density ratio). A positron that reaches the tube's aluminium wall (2.7 g/cm^3) slows down 2.7x
faster and annihilates inside it; one that would leave the tube stops at its outer surface
(annihilations in air, a few per thousand of those reaching the wall, are not modelled).
"""

from __future__ import annotations

import numpy as np

from . import materials as mat

LEVIN_HOFFMAN_F18 = {"C": 0.516, "k1_per_mm": 37.9, "k2_per_mm": 3.10, "fwhm_mm": 0.102, "fwtm_mm": 1.03}
_C, _K1, _K2 = LEVIN_HOFFMAN_F18["C"], LEVIN_HOFFMAN_F18["k1_per_mm"], LEVIN_HOFFMAN_F18["k2_per_mm"]
# Probability of the short (k1) component: the areas of the two exponentials of the 1D profile.
SHORT_FRACTION = (_C / _K1) / (_C / _K1 + (1.0 - _C) / _K2)
SCALE_SHORT_MM = 1.0 / _K1
SCALE_LONG_MM = 1.0 / _K2
MEAN_RANGE_MM = 2.0 * (SHORT_FRACTION * SCALE_SHORT_MM + (1.0 - SHORT_FRACTION) * SCALE_LONG_MM)
MAX_SEGMENT_MM = 50.0  # longest straight flight tried in one material (a gas bubble, ~0.001 g/cm^3)
MAX_SEGMENTS = 4  # materials crossed before the positron is stopped at the last boundary
BISECTIONS = 30  # boundary located to MAX_SEGMENT_MM / 2^30 < 1e-7 mm


def water_range_mm(n: int, rng: np.random.Generator) -> np.ndarray:
    """Distances (mm) from emission to annihilation of n F-18 positrons in water."""
    scale = np.where(rng.random(n) < SHORT_FRACTION, SCALE_SHORT_MM, SCALE_LONG_MM)
    return rng.gamma(2.0, 1.0, n) * scale


def relative_densities(names: list[str]) -> np.ndarray:
    """Density of each material id relative to water (the range scales with 1 / this)."""
    water = mat.MATERIALS["Water"][1]
    return np.array([mat.MATERIALS[n][1] / water for n in names])


def annihilation_points(src: np.ndarray, tube, rng: np.random.Generator, density: np.ndarray) -> np.ndarray:
    """Annihilation points (n, 3) of positrons emitted at ``src`` (n, 3), in the tube's materials.

    Params:
        src: emission points (in the fluid).
        tube: the phantom (``classify(x, y, z)``: material ids; id 0 is the air outside the tube).
        rng: the Generator.
        density: relative density per material id (:func:`relative_densities`).
    """
    n = src.shape[0]
    left = water_range_mm(n, rng)  # water-equivalent length still to travel
    u = mat.isotropic(n, rng)
    p = np.array(src, dtype=np.float64)
    m = tube.classify(p[:, 0], p[:, 1], p[:, 2]).astype(np.int64)
    todo = np.arange(n)
    for _ in range(MAX_SEGMENTS):
        if not todo.size:
            break
        pk, uk, mk = p[todo], u[todo], m[todo]
        seg = np.minimum(left[todo] / density[mk], MAX_SEGMENT_MM)
        end = pk + uk * seg[:, None]
        same = tube.classify(end[:, 0], end[:, 1], end[:, 2]) == mk
        p[todo[same]] = end[same]
        cross = ~same
        todo, pk, uk, mk, seg = todo[cross], pk[cross], uk[cross], mk[cross], seg[cross]
        # Bisection for the first change of material along the segment.
        lo, hi = np.zeros(todo.size), seg.copy()
        for _ in range(BISECTIONS):
            mid = 0.5 * (lo + hi)
            q = pk + uk * mid[:, None]
            inside = tube.classify(q[:, 0], q[:, 1], q[:, 2]) == mk
            lo = np.where(inside, mid, lo)
            hi = np.where(inside, hi, mid)
        p[todo] = pk + uk * lo[:, None]
        left[todo] -= lo * density[mk]
        q = pk + uk * hi[:, None]
        nxt = tube.classify(q[:, 0], q[:, 1], q[:, 2]).astype(np.int64)
        # Leaving the tube: annihilate at its surface (stopped in the wall).
        go = nxt != 0
        todo = todo[go]
        p[todo] = q[go]
        m[todo] = nxt[go]
    return p
