"""The fast engine compiled with numba: the physics of :mod:`.fast`, one photon at a time.

Same scene, same physics and same outputs as the numpy reference (:class:`.fast.FastEngine`,
whose module docstring describes the model): decay positions uniform in the fluid, optional
beta+ branching and positron range (Levin & Hoffman, density-scaled), back-to-back photons with
acollinearity, Woodcock tracking through the tube against the majorant of its materials
(photoelectric, Klein-Nishina Compton, Rayleigh from the form-factor tables, up to
``max_scatter_orders``, the ``E_cut`` drop), crystal tracking (photoelectric / Compton, Compton
escape, at most ``MAX_CRYSTAL_INTERACTIONS`` interactions per photon) in the box crystals with
per-crystal readout of each decay's deposits (``digitizer.readout: crystal``; Woodcock tracking
against LYSO in the shell of the boxes, where the numpy engine walks the cells of
:mod:`.crystals`) or in the gapless annulus (``annulus``), with the readout policy and
discretisation of ``digitizer``, and the digitizer (energy and time blur, energy window).
The phantom is classified with an exact port of :meth:`TubePhantom.classify_local` (no
voxelisation), and the cross sections are the same tables (:class:`.materials.MaterialTable`).

What differs is only how the work is laid out: one compiled loop per chunk carries each decay
from emission to its singles, so nothing is gathered, masked or compacted between steps, and
the samplers avoid transcendental functions where an exact rejection method exists (uniform
azimuths from the unit disc by angle doubling, normals by Marsaglia's polar method). Random
numbers come from xoshiro256+ (Blackman & Vigna), whose state is seeded for every chunk from
the scan's numpy Generator: the same seed gives the same file. The two engines consume random
numbers differently, so they agree within statistics, not event by event
(``tests/test_simulate_numba.py`` checks counts, scatter fraction and spectra against the
numpy reference, and the kernels against known answers).

Kernels are compiled on first use and cached on disk (``cache=True``; about 10-20 s once per
environment, then well under a second to load).
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
from numba import njit

from ..geometry.phantom import DEFECT_LABELS, FLUID, TubePhantom
from ..geometry.scanner import Scanner
from . import materials as mat
from . import positron
from .crystals import BoxRing
from .fast import (
    C_MM_PER_NS,
    MAX_CRYSTAL_INTERACTIONS,
    PHOTON_MEV,
    FastEngine,
    Photons,
    fast_chunks,
    make_background,
)
from .settings import FWHM_TO_SIGMA, Acquisition, Digitizer

# The kernels allocate nothing, so they run without numba's reference counting (_nrt=False): with
# it, arrays handed to the helpers in the loops cost atomic increments and decrements that took
# ~30 % of the engine's time (measured with perf). fastmath: only contraction and reciprocal /
# reassociation freedoms (no finite-math assumptions: infinities mark "never" distances).
_JIT = dict(cache=True, nogil=True, error_model="numpy", fastmath={"contract", "arcp", "reassoc", "nsz"}, _nrt=False)
# Helpers are inlined at numba's level (cheaper than calls that marshal many array arguments).
_INLINE = dict(_JIT, inline="always")

# Layout of the packed parameter vectors handed to the kernels.
# Tube (TP_*): shape and placement of the tube.
TP_A, TP_B, TP_WALL, TP_WVAR_C, TP_WVAR_S, TP_CPSI, TP_SPSI, TP_BEND, TP_CBEND, TP_SBEND = range(10)
TP_HALF_LEN, TP_R_BOUND, TP_H_BOUND, TP_WALL_MAX, TP_INV_A2, TP_INV_B2, TP_INV_SA2, TP_INV_SB2, TP_N = range(10, 19)
# Defects (one row each): kind code, local centre, then kind-specific sizes.
DF_KIND, DF_CU, DF_CV, DF_CZ, DF_EXT, DF_P1, DF_P2, DF_P3, DF_N = range(9)
K_CRACK, K_PIT, K_BLOCKAGE, K_BUBBLE = (DEFECT_LABELS[k] for k in ("crack", "pit", "blockage", "bubble"))
# Physics / digitizer (PP_*).
(
    PP_E_CUT,
    PP_MAX_ORDERS,
    PP_RAYLEIGH,
    PP_ACOL_SIGMA,
    PP_POS_RANGE,
    PP_RES,
    PP_EREF,
    PP_T_SIGMA,
    PP_E_LO,
    PP_E_HI,
    PP_R_IN,
    PP_R_OUT,
    PP_HALF_AX,
    PP_NCRYS,
    PP_RINGS,
    PP_AX_PITCH,
    PP_CRYSTAL_READOUT,
    PP_CENTROID,
    PP_DISCRETIZE,
    PP_BETA_FRAC,
    PP_N,
) = range(21)
# Box crystals (GB_*: :meth:`.crystals.BoxRing.packed`).
GB_N, GB_RINGS, GB_R_IN, GB_DEPTH, GB_HALF_W, GB_HALF_H, GB_PITCH, GB_R_MAX, GB_Z_HALF = range(9)

E_MIN = mat.E_MIN_MEV
N_E = mat.N_ENERGIES
DE = (mat.E_MAX_MEV - mat.E_MIN_MEV) / (mat.N_ENERGIES - 1)
ME = mat.ELECTRON_MASS_MEV
INV_DE = 1.0 / DE
INV_2_53 = 1.0 / 9007199254740992.0
TWO_PI = 2.0 * math.pi
POS_SHORT_FRACTION = positron.SHORT_FRACTION
POS_SCALE_SHORT = positron.SCALE_SHORT_MM
POS_SCALE_LONG = positron.SCALE_LONG_MM
POS_MAX_SEGMENTS = positron.MAX_SEGMENTS
POS_MAX_SEGMENT = positron.MAX_SEGMENT_MM
POS_BISECTIONS = positron.BISECTIONS
MAX_HITS = 2 * MAX_CRYSTAL_INTERACTIONS  # crystal deposits of one decay
# A bound on the work of one crystal flight, never reached: a 511 keV photon expects ~12 flights
# along the longest chord through the shell, a low-energy one stops in its first box.
MAX_NULL_COLLISIONS = 1_000_000

# ---- random numbers: xoshiro256+ -------------------------------------------------------------


def seed_state(rng: np.random.Generator) -> np.ndarray:
    """A fresh xoshiro256+ state (4 uint64, not all zero) drawn from a numpy Generator."""
    while True:
        s = rng.integers(0, np.iinfo(np.uint64).max, size=4, dtype=np.uint64, endpoint=True)
        if s.any():
            return s


@njit(**_INLINE)
def _next(s):
    r = s[0] + s[3]
    t = s[1] << np.uint64(17)
    s[2] ^= s[0]
    s[3] ^= s[1]
    s[1] ^= s[2]
    s[0] ^= s[3]
    s[2] ^= t
    s[3] = (s[3] << np.uint64(45)) | (s[3] >> np.uint64(19))
    return r


# splitmix64 (Steele, Lea & Flood; Vigna's recommended seeder for xoshiro): the golden-ratio
# increment and the two multipliers of its output mix.
SPLITMIX_GAMMA = np.uint64(0x9E3779B97F4A7C15)
SPLITMIX_M1 = np.uint64(0xBF58476D1CE4E5B9)
SPLITMIX_M2 = np.uint64(0x94D049BB133111EB)


@njit(**_INLINE)
def _seed_stream(seed, k, s):
    """Fill ``s`` with the xoshiro256+ state of stream ``k`` of ``seed``: four consecutive outputs
    of splitmix64 from ``seed + 4 k gamma``, so streams 0, 1, 2... start on disjoint stretches of
    the splitmix sequence (the GPU engine gives each decay its own stream)."""
    x = seed + np.uint64(k) * np.uint64(4) * SPLITMIX_GAMMA
    for i in range(4):
        x += SPLITMIX_GAMMA
        z = x
        z = (z ^ (z >> np.uint64(30))) * SPLITMIX_M1
        z = (z ^ (z >> np.uint64(27))) * SPLITMIX_M2
        s[i] = z ^ (z >> np.uint64(31))


@njit(**_INLINE)
def _u01(s):
    """Uniform on [0, 1) with 53 random bits."""
    # Via int64 (53 bits fit): x86 converts signed integers to double in one instruction.
    return np.float64(np.int64(_next(s) >> np.uint64(11))) * INV_2_53


@njit(**_INLINE)
def _u_pos(s):
    """Uniform on (0, 1] (safe for logarithms)."""
    return (np.float64(np.int64(_next(s) >> np.uint64(11))) + 1.0) * INV_2_53


@njit(**_INLINE)
def _expo(s):
    return -math.log(_u_pos(s))


@njit(**_INLINE)
def _normal_pair(s):
    """Two independent standard normals (Marsaglia's polar method)."""
    while True:
        x = 2.0 * _u01(s) - 1.0
        y = 2.0 * _u01(s) - 1.0
        q = x * x + y * y
        if 0.0 < q < 1.0:
            f = math.sqrt(-2.0 * math.log(q) / q)
            return x * f, y * f


@njit(**_INLINE)
def _cos_of_root(x2):
    """cos(sqrt(x2)): for the small angles of the acollinearity (x < 0.1 rad) its Taylor series
    to x^10 (truncation < 3e-21, below double rounding), else libm."""
    if x2 < 0.01:
        return 1.0 - x2 / 2.0 * (1.0 - x2 / 12.0 * (1.0 - x2 / 30.0 * (1.0 - x2 / 56.0 * (1.0 - x2 / 90.0))))
    return math.cos(math.sqrt(x2))


@njit(**_INLINE)
def _azimuth(s):
    """(cos phi, sin phi) of a uniform azimuth: a uniform point of the unit disc, angle doubled."""
    while True:
        x = 2.0 * _u01(s) - 1.0
        y = 2.0 * _u01(s) - 1.0
        q = x * x + y * y
        if 0.0 < q < 1.0:
            return (x * x - y * y) / q, 2.0 * x * y / q


@njit(**_INLINE)
def _isotropic(s):
    c = 2.0 * _u01(s) - 1.0
    st = math.sqrt(max(1.0 - c * c, 0.0))
    cp, sp = _azimuth(s)
    return cp * st, sp * st, c


@njit(**_INLINE)
def _rotate(ux, uy, uz, cos_t, s):
    """Turn (ux, uy, uz) by polar angle acos(cos_t) and a uniform azimuth (CLHEP rotateUz)."""
    sin_t = math.sqrt(max(1.0 - cos_t * cos_t, 0.0))
    cp, sp = _azimuth(s)
    lx = cp * sin_t
    ly = sp * sin_t
    lz = cos_t
    up2 = ux * ux + uy * uy
    if up2 < 1e-20:
        sgn = 1.0 if uz >= 0.0 else -1.0
        return lx * sgn, ly, lz * sgn
    up = math.sqrt(up2)
    a = uz * lx / up
    b = ly / up
    return ux * a - uy * b + ux * lz, uy * a + ux * b + uy * lz, uz * lz - up * lx


@njit(**_INLINE)
def _klein_nishina(e, s):
    """(cos theta, E') of a Compton scatter off a free electron (Butcher & Messel, as Geant4)."""
    k = e / ME
    eps0 = 1.0 / (1.0 + 2.0 * k)
    eps0sq = eps0 * eps0
    alpha1 = -math.log(eps0)
    alpha2 = alpha1 + 0.5 * (1.0 - eps0sq)
    while True:
        r0 = _u01(s)
        r1 = _u01(s)
        r2 = _u01(s)
        if alpha1 > alpha2 * r0:
            eps = math.exp(-alpha1 * r1)
        else:
            eps = math.sqrt(eps0sq + (1.0 - eps0sq) * r1)
        onecost = (1.0 - eps) / (eps * k)
        sint2 = onecost * (2.0 - onecost)
        if 1.0 - eps * sint2 / (1.0 + eps * eps) >= r2:
            return min(max(1.0 - onecost, -1.0), 1.0), eps * e


# ---- tables ----------------------------------------------------------------------------------


@njit(**_INLINE)
def _grid(e):
    f = (e - E_MIN) * INV_DE
    if f < 0.0:
        f = 0.0
    elif f > N_E - 1.000001:
        f = N_E - 1.000001
    i = int(f)
    return i, f - i


@njit(**_INLINE)
def _lookup(tab, i, w):
    return tab[i] * (1.0 - w) + tab[i + 1] * w


@njit(**_INLINE)
def _lookup3(tab, k, m, i, w):
    # Scalar indexing only: a slice such as tab[k, m] is a new array view, and making one costs
    # two atomic reference-count updates (measured: ~30 % of the engine's time).
    return tab[k, m, i] * (1.0 - w) + tab[k, m, i + 1] * w


@njit(**_INLINE)
def _rayleigh_cos(cdfs, ray_e, theta, m, e, s):
    """cos(theta) of a Rayleigh scatter (the CDF of the nearest tabulated energy at or above e)."""
    n_e = ray_e.size
    j = 0
    while j < n_e and ray_e[j] < e:  # np.searchsorted(ray_e, e), side left
        j += 1
    if j > n_e - 1:
        j = n_e - 1
    u = _u01(s)
    # k = searchsorted(cdf, u, side right) - 1, by bisection with scalar indexing (no views).
    n = cdfs.shape[2]
    lo = 0
    hi = n
    while lo < hi:
        mid = (lo + hi) >> 1
        if cdfs[m, j, mid] <= u:
            lo = mid + 1
        else:
            hi = mid
    k = lo - 1
    if k < 0:
        return math.cos(theta[0])
    if k >= n - 1:
        return math.cos(theta[n - 1])
    c0 = cdfs[m, j, k]
    d = cdfs[m, j, k + 1] - c0
    t = theta[k] if d <= 0.0 else theta[k] + (theta[k + 1] - theta[k]) * (u - c0) / d
    return math.cos(t)


# ---- phantom geometry ------------------------------------------------------------------------


@njit(**_INLINE)
def _classify_local(u, v, z, tp, df):
    """Material id of a point in the tube's local frame (port of TubePhantom.classify_local)."""
    if abs(z) > tp[TP_HALF_LEN]:
        return 0
    uu = u * u
    vv = v * v
    # Exact shortcuts without square roots: outside the outer ellipse is air (every defect needs
    # wall or lumen); inside the "safe" inner ellipse (pack_tube) is lumen for every azimuth.
    e_out = uu * tp[TP_INV_A2] + vv * tp[TP_INV_B2]
    if e_out > 1.0:
        return 0
    if uu * tp[TP_INV_SA2] + vv * tp[TP_INV_SB2] < 1.0:
        return _defects(u, v, z, df, 1, True, False, 0.0, 0.0, 0.0)
    a = tp[TP_A]
    b = tp[TP_B]
    r = uu + vv
    if r <= 0.0:
        r = 0.0
        rout = min(a, b)
        t = tp[TP_WALL_MAX]
    else:
        r = math.sqrt(r)
        rout = r / math.sqrt(uu * (b * b) + vv * (a * a)) * (a * b)
        t = (u * tp[TP_WVAR_C] + v * tp[TP_WVAR_S]) / r + tp[TP_WALL]
    rin = rout - t
    lumen = r < rin
    wall = (r >= rin) and (r <= rout)
    m = 1 if lumen else (2 if wall else 0)
    return _defects(u, v, z, df, m, lumen, wall, r, rin, t)


@njit(**_INLINE)
def _defects(u, v, z, df, m, lumen, wall, r, rin, t):
    """The material after the defects (in order; a later one wins) change the base material m."""
    for k in range(df.shape[0]):
        cz = df[k, DF_CZ]
        if abs(z - cz) > df[k, DF_EXT]:
            continue
        kind = df[k, DF_KIND]
        du = u - df[k, DF_CU]
        dv = v - df[k, DF_CV]
        dz = z - cz
        if kind == K_CRACK:
            cp = df[k, DF_P2]
            sp = df[k, DF_P3]
            if wall and u * cp + v * sp > 0.0 and abs(u * sp - v * cp) <= df[k, DF_P1]:
                m = 1
        elif kind == K_PIT:
            rad = df[k, DF_P1]
            if wall and du * du + dv * dv + dz * dz <= rad * rad and r - rin <= df[k, DF_P2] * t:
                m = 1
        elif kind == K_BLOCKAGE:
            rad = df[k, DF_P1]
            half = df[k, DF_P2]
            if lumen and (du * du + dv * dv) / (rad * rad) + (dz / half) ** 2 <= 1.0:
                m = 3
        else:
            rad = df[k, DF_P1]
            if lumen and du * du + dv * dv + dz * dz <= rad * rad:
                m = 4
    return m


@njit(**_INLINE)
def _axis_offset(z, tp):
    zz = z * (2.0 / (2.0 * tp[TP_HALF_LEN]))
    zz = min(max(zz, -1.0), 1.0)
    zz *= zz
    sag = tp[TP_BEND] - tp[TP_BEND] * zz
    return sag * tp[TP_CBEND], sag * tp[TP_SBEND]


@njit(**_INLINE)
def _classify(x, y, z, tp, df):
    """Material id of a point in scanner coordinates."""
    if tp[TP_BEND] != 0.0:
        dx, dy = _axis_offset(z, tp)
        x = x - dx
        y = y - dy
    c = tp[TP_CPSI]
    sn = tp[TP_SPSI]
    return _classify_local(x * c + y * sn, y * c - x * sn, z, tp, df)


@njit(**_INLINE)
def _sample_fluid(tp, df, s):
    """A point uniform in the fluid: rejection in the local bounding box, mapped to the scanner."""
    a = tp[TP_A]
    b = tp[TP_B]
    h = tp[TP_HALF_LEN]
    while True:
        u = a * (2.0 * _u01(s) - 1.0)
        v = b * (2.0 * _u01(s) - 1.0)
        z = h * (2.0 * _u01(s) - 1.0)
        if _classify_local(u, v, z, tp, df) == FLUID:
            c = tp[TP_CPSI]
            sn = tp[TP_SPSI]
            dx, dy = _axis_offset(z, tp)
            return u * c - v * sn + dx, u * sn + v * c + dy, z


@njit(**_INLINE)
def _exit_cylinder(x, y, z, ux, uy, uz, radius, half):
    """Distance from a point inside the z-cylinder |xy| <= radius, |z| <= half to its surface."""
    a = ux * ux + uy * uy
    t = np.inf
    if a > 1e-15:
        b = x * ux + y * uy
        disc = b * b - a * (x * x + y * y - radius * radius)
        t = (math.sqrt(max(disc, 0.0)) - b) / a
    if uz > 0.0:
        t = min(t, (half - z) / uz)
    elif uz < 0.0:
        t = min(t, (-half - z) / uz)
    return max(t, 0.0)


@njit(**_INLINE)
def _leave_annulus(x, y, z, ux, uy, uz, r_in, r_out, half):
    """Distance from a point in the crystal annulus to where it leaves it (outwards, into the
    bore, or through an axial end face)."""
    a = ux * ux + uy * uy
    t = np.inf
    if a > 1e-15:
        b = x * ux + y * uy
        rr = x * x + y * y
        bb = b * b
        t = (math.sqrt(max(bb - a * (rr - r_out * r_out), 0.0)) - b) / a
        disc = bb - a * (rr - r_in * r_in)
        if b < 0.0 and disc > 0.0:
            t = min(t, (-b - math.sqrt(disc)) / a)
    if uz > 0.0:
        t = min(t, (half - z) / uz)
    elif uz < 0.0:
        t = min(t, (-half - z) / uz)
    return max(t, 0.0)


# ---- per-photon transport --------------------------------------------------------------------


@njit(**_INLINE)
def _transport(x, y, z, ux, uy, uz, e, tp, df, cum, majorant, cdfs, ray_e, theta, pp, s):
    """Woodcock tracking of one photon through the tube until it leaves the bounding cylinder.

    Returns (alive, x, y, z, ux, uy, uz, e, path, scatters); alive is False when it was absorbed,
    dropped below E_cut, or would have scattered beyond max_scatter_orders.
    """
    r_b = tp[TP_R_BOUND]
    h_b = tp[TP_H_BOUND]
    e_cut = pp[PP_E_CUT]
    max_orders = pp[PP_MAX_ORDERS]
    path = 0.0
    nsc = 0
    new_segment = True
    while True:
        if new_segment:
            # Distance to the bounding cylinder and the majorant change only at a real scatter;
            # along a segment of null collisions the distance left just shrinks by each flight.
            dexit = _exit_cylinder(x, y, z, ux, uy, uz, r_b, h_b)
            i, w = _grid(e)
            mumax = _lookup(majorant, i, w)
            new_segment = False
        d = _expo(s) / mumax
        if not d < dexit:
            x += ux * dexit
            y += uy * dexit
            z += uz * dexit
            return True, x, y, z, ux, uy, uz, e, path + dexit, nsc
        x += ux * d
        y += uy * d
        z += uz * d
        path += d
        dexit -= d
        m = _classify(x, y, z, tp, df)
        r = _u01(s) * mumax
        if not r < _lookup3(cum, 2, m, i, w):
            continue  # a null collision (most are): one table lookup instead of three
        if r < _lookup3(cum, 0, m, i, w):
            return False, x, y, z, ux, uy, uz, e, path, nsc
        if r < _lookup3(cum, 1, m, i, w):
            if nsc >= max_orders:
                return False, x, y, z, ux, uy, uz, e, path, nsc
            cos_t, e = _klein_nishina(e, s)
            ux, uy, uz = _rotate(ux, uy, uz, cos_t, s)
            nsc += 1
            new_segment = True
            if e < e_cut:
                return False, x, y, z, ux, uy, uz, e, path, nsc
        else:
            if nsc >= max_orders:
                return False, x, y, z, ux, uy, uz, e, path, nsc
            cos_t = _rayleigh_cos(cdfs, ray_e, theta, m, e, s)
            ux, uy, uz = _rotate(ux, uy, uz, cos_t, s)
            nsc += 1
            new_segment = True


@njit(**_INLINE)
def _crystal_interaction(e, ux, uy, uz, mu_pe, mu, s):
    """One interaction in LYSO: photoelectric (probability mu_pe / mu; the photon is absorbed) or
    Compton. Returns (photo, deposit, energy, ux, uy, uz) of the photon after it."""
    if _u01(s) * mu < mu_pe:
        return True, e, e, ux, uy, uz
    cos_t, e_new = _klein_nishina(e, s)
    ux, uy, uz = _rotate(ux, uy, uz, cos_t, s)
    return False, e - e_new, e_new, ux, uy, uz


@njit(**_INLINE)
def _detect(x, y, z, ux, uy, uz, e, path, cpe, cco, pp, gt, s):
    """Carry a photon across the bore into the crystal annulus and track it there.

    Returns (edep, x, y, z, path, crystal) of the readout (summed deposits at the position of the
    largest one); edep 0 when nothing is recorded, crystal -1 outside the rings.
    """
    r_in = pp[PP_R_IN]
    r_out = pp[PP_R_OUT]
    half = pp[PP_HALF_AX]
    a = ux * ux + uy * uy
    if not a > 1e-15:
        return 0.0, 0.0, 0.0, 0.0, 0.0, -1
    b = x * ux + y * uy
    disc = b * b - a * (x * x + y * y - r_in * r_in)
    t_in = (math.sqrt(max(disc, 0.0)) - b) / a
    z_in = z + t_in * uz
    if not abs(z_in) < half:
        return 0.0, 0.0, 0.0, 0.0, 0.0, -1
    x += ux * t_in
    y += uy * t_in
    z = z_in
    path += t_in
    edep = 0.0
    best = 0.0
    bx = 0.0
    by = 0.0
    bz = 0.0
    bpath = 0.0
    centroid = pp[PP_CENTROID] != 0.0
    wx = 0.0
    wy = 0.0
    wz = 0.0
    for _ in range(MAX_CRYSTAL_INTERACTIONS):
        dout = _leave_annulus(x, y, z, ux, uy, uz, r_in, r_out, half)
        i, w = _grid(e)
        mu_pe = _lookup(cpe, i, w)
        mu = mu_pe + _lookup(cco, i, w)
        d = _expo(s) / mu
        if not d < dout:
            break
        x += ux * d
        y += uy * d
        z += uz * d
        path += d
        photo, dep, e, ux, uy, uz = _crystal_interaction(e, ux, uy, uz, mu_pe, mu, s)
        edep += dep
        if centroid:
            wx += dep * x
            wy += dep * y
            wz += dep * z
        if dep > best:
            best = dep
            bx = x
            by = y
            bz = z
            bpath = path
        if photo:
            break
    if not edep > 0.0:
        return 0.0, 0.0, 0.0, 0.0, 0.0, -1
    if centroid:
        bx = wx / edep
        by = wy / edep
        bz = wz / edep
    # Positions are stored as float32: locate the crystal from the stored values, so the file's
    # CrystalID and PostPosition always agree (as the numpy engine does).
    fx = np.float64(np.float32(bx))
    fy = np.float64(np.float32(by))
    fz = np.float64(np.float32(bz))
    ncrys = int(pp[PP_NCRYS])
    rings = int(pp[PP_RINGS])
    index = _sector(fx, fy, ncrys, gt, -1)
    ring = int(math.floor(fz / pp[PP_AX_PITCH] + rings / 2))
    crystal = ring * ncrys + index if 0 <= ring < rings else -1
    if crystal >= 0 and pp[PP_DISCRETIZE] != 0.0:
        fx, fy, fz = _crystal_centre(crystal, pp, gt)
    return edep, fx, fy, fz, bpath, crystal


@njit(**_INLINE)
def _crystal_centre(crystal, pp, gt):
    """Centre of a crystal (mid-depth), as float32 values (Scanner.crystal_centre); the cos and
    sin of its azimuth come from the table ``gt`` (:func:`box_tables`), not from sincos."""
    ncrys = int(pp[PP_NCRYS])
    ring = crystal // ncrys
    index = crystal - ring * ncrys
    r = 0.5 * (pp[PP_R_IN] + pp[PP_R_OUT])
    zc = (ring - (pp[PP_RINGS] - 1.0) / 2.0) * pp[PP_AX_PITCH]
    return (
        np.float64(np.float32(r * gt[0, index])),
        np.float64(np.float32(r * gt[1, index])),
        np.float64(np.float32(zc)),
    )


# ---- box crystals (see .crystals) --------------------------------------------------------------


def box_tables(n: int) -> np.ndarray:
    """(4, n): cos and sin of crystal i's azimuth 2 pi i / n, and of its sector's upper boundary
    2 pi (i + 1/2) / n (looked up instead of evaluated in :func:`_sector`)."""
    phi = 2 * np.pi * np.arange(n) / n
    b = phi + np.pi / n
    return np.ascontiguousarray(np.stack([np.cos(phi), np.sin(phi), np.cos(b), np.sin(b)]))


@njit(**_INLINE)
def _sector(px, py, n, gt, guess):
    """rint(atan2(py, px) n / 2 pi) mod n, the azimuthal cell holding (px, py), without atan2
    (which took ~13 % of the engine's time in the former cell walk, perf). Starts from ``guess``
    (a cell; in the crystal tracker the previous collision's) or, when it is -1, from a cheap
    estimate of the azimuth (within 0.0015 rad: Rajan et al. 2006's approximation of atan on
    [0, 1]); then the exact test against the cell's two boundaries (rows 2 and 3 of ``gt``,
    :func:`box_tables`), stepping to the neighbour until they hold the point. Same cell as atan2
    except exactly on a boundary (measure zero); a guess far off costs only steps."""
    index = guess
    if index < 0:
        ax = abs(px)
        ay = abs(py)
        if ax >= ay:
            t = ay / ax
            a = t * (0.25 * math.pi - (t - 1.0) * (0.2447 + 0.0663 * t))
        else:
            t = ax / ay
            a = 0.5 * math.pi - t * (0.25 * math.pi - (t - 1.0) * (0.2447 + 0.0663 * t))
        if px < 0.0:
            a = math.pi - a
        if py < 0.0:
            a = TWO_PI - a
        index = int(a * n / TWO_PI + 0.5) % n
    for _ in range(n):
        lo = (index - 1) % n
        if gt[2, lo] * py - gt[3, lo] * px < 0.0:  # clockwise of the lower boundary
            index = lo
        elif gt[2, index] * py - gt[3, index] * px >= 0.0:  # on or past the upper boundary
            index = (index + 1) % n
        else:
            break
    return index


@njit(**_INLINE)
def _shell_intervals(x, y, z, ux, uy, uz, gb):
    """The stretches of the ray (x, y, z) + t u, t >= 0, inside the shell that holds every box
    (R <= r <= r_max, |z| <= z_half): (t0, t1, t2, t3), the second empty (t2 >= t3) unless the
    ray crosses the bore in between (a photon scattered back out of a crystal)."""
    a = ux * ux + uy * uy
    if not a > 1e-15:
        return 0.0, 0.0, 0.0, 0.0  # along the axis: no crystal ahead
    r_in = gb[GB_R_IN]
    r_max = gb[GB_R_MAX]
    z_half = gb[GB_Z_HALF]
    b = x * ux + y * uy
    rr = x * x + y * y
    d_out = b * b - a * (rr - r_max * r_max)
    if not d_out > 0.0:
        return 0.0, 0.0, 0.0, 0.0
    q = math.sqrt(d_out)
    t0 = max((-b - q) / a, 0.0)
    t1 = (q - b) / a  # leaves the outer circle
    t2 = t1
    t3 = t1
    d_in = b * b - a * (rr - r_in * r_in)
    if d_in > 0.0:
        qi = math.sqrt(d_in)
        enter = (-b - qi) / a
        leave = (qi - b) / a
        if leave > t0:
            if enter > t0:  # in the shell now: out into the bore, across it, into the shell again
                t1 = enter
                t2 = leave
            else:  # in the bore now
                t0 = leave
    # The rings' axial extent.
    if uz != 0.0:
        za = (-z_half - z) / uz
        zb = (z_half - z) / uz
        lo = min(za, zb)
        hi = max(za, zb)
    elif abs(z) <= z_half:
        lo = -np.inf
        hi = np.inf
    else:
        return 0.0, 0.0, 0.0, 0.0
    return max(t0, lo), min(t1, hi), max(t2, lo), min(t3, hi)


@njit(**_INLINE)
def _box_holding(px, py, pz, gb, gt, guess):
    """The crystal whose box holds the point, or -1 (a gap): the box of the point's cell, the only
    one that can (see :mod:`.crystals`); ``guess`` as for :func:`_sector`."""
    n = int(gb[GB_N])
    index = _sector(px, py, n, gt, guess)
    c = gt[0, index]
    sn = gt[1, index]
    depth = px * c + py * sn - gb[GB_R_IN]
    if depth < 0.0 or depth > gb[GB_DEPTH] or abs(py * c - px * sn) > gb[GB_HALF_W]:
        return -1, index
    rings = gb[GB_RINGS]
    ring = int(math.floor(pz / gb[GB_PITCH] + rings / 2.0))
    if ring < 0 or ring >= rings or abs(pz - (ring - (rings - 1.0) / 2.0) * gb[GB_PITCH]) > gb[GB_HALF_H]:
        return -1, index
    return ring * n + index, index


@njit(**_INLINE)
def _track_boxes(x, y, z, ux, uy, uz, e, path, nsc, cpe, cco, gb, gt, s, h_cry, h_dep, h_pos, h_path, h_nsc, nh):
    """Track one photon through the box crystals, appending its deposits to the hit arrays from
    index nh; returns the new number of hits.

    Woodcock tracking in the shell that holds every box, against LYSO's attenuation: a flight
    that ends in a box interacts there, one that ends in a gap between boxes (air, in which
    nothing interacts) is a null collision and flies on. This is exact for boxes in vacuum and
    needs no walk from box to box (the numpy engine's :func:`.crystals.next_box`, which this
    kernel ported until the crystal tracking was half of its time). The boxes fill 92 % of the
    shell, so null collisions are few.
    """
    n_int = 0
    while True:
        t0, t1, t2, t3 = _shell_intervals(x, y, z, ux, uy, uz, gb)
        i, w = _grid(e)
        mu_pe = _lookup(cpe, i, w)
        mu = mu_pe + _lookup(cco, i, w)
        crystal = -1
        t = t0
        guess = -1
        for _ in range(MAX_NULL_COLLISIONS):
            t += _expo(s) / mu
            if not t < t1:
                if not t2 < t3:
                    return nh  # out of the shell: no crystal ahead
                # Across the bore to the far side of the ring: a fresh flight from where the ray
                # enters the shell again (memoryless), a fresh cell estimate.
                t = t2
                t1 = t3
                t3 = t2
                guess = -1
                continue
            crystal, guess = _box_holding(x + ux * t, y + uy * t, z + uz * t, gb, gt, guess)
            if crystal >= 0:
                break
        if crystal < 0:
            return nh
        x += ux * t
        y += uy * t
        z += uz * t
        path += t
        photo, dep, e, ux, uy, uz = _crystal_interaction(e, ux, uy, uz, mu_pe, mu, s)
        h_cry[nh] = crystal
        h_dep[nh] = dep
        h_pos[0, nh] = x
        h_pos[1, nh] = y
        h_pos[2, nh] = z
        h_path[nh] = path
        h_nsc[nh] = nsc
        nh += 1
        n_int += 1
        if photo or n_int >= MAX_CRYSTAL_INTERACTIONS:
            return nh


@njit(**_INLINE)
def _emit(tp, df, pp, dens, s):
    """One decay: its position, the annihilation point and the two photons' directions."""
    sx, sy, sz = _sample_fluid(tp, df, s)
    ax, ay, az = sx, sy, sz
    if pp[PP_POS_RANGE] != 0.0:
        ax, ay, az = _annihilation(sx, sy, sz, FLUID, tp, df, dens, s)
    u1x, u1y, u1z = _isotropic(s)
    acol = pp[PP_ACOL_SIGMA]
    if acol > 0.0:
        # Two Gaussian transverse components of width sigma make a Rayleigh deviation angle:
        # dev^2 = sigma^2 (g1^2 + g2^2) = -2 sigma^2 ln U, one logarithm and no square root.
        dev2 = -2.0 * acol * acol * math.log(_u_pos(s))
        u2x, u2y, u2z = _rotate(-u1x, -u1y, -u1z, _cos_of_root(dev2), s)
    else:
        u2x, u2y, u2z = -u1x, -u1y, -u1z
    return sx, sy, sz, ax, ay, az, u1x, u1y, u1z, u2x, u2y, u2z


@njit(**_INLINE)
def _annihilation(sx, sy, sz, m, tp, df, dens, s):
    """Annihilation point of a positron emitted at (sx, sy, sz) in material m: port of
    :func:`.positron.annihilation_points` (Levin & Hoffman's F-18 kernel, density-scaled per material)."""
    if _u01(s) < POS_SHORT_FRACTION:
        scale = POS_SCALE_SHORT
    else:
        scale = POS_SCALE_LONG
    left = -scale * math.log(_u_pos(s) * _u_pos(s))  # gamma(2, scale)
    ux, uy, uz = _isotropic(s)
    x, y, z = sx, sy, sz
    for _ in range(POS_MAX_SEGMENTS):
        seg = min(left / dens[m], POS_MAX_SEGMENT)
        ex = x + ux * seg
        ey = y + uy * seg
        ez = z + uz * seg
        if _classify(ex, ey, ez, tp, df) == m:
            return ex, ey, ez
        lo = 0.0
        hi = seg
        for _ in range(POS_BISECTIONS):
            mid = 0.5 * (lo + hi)
            if _classify(x + ux * mid, y + uy * mid, z + uz * mid, tp, df) == m:
                lo = mid
            else:
                hi = mid
        left -= lo * dens[m]
        nx = x + ux * hi
        ny = y + uy * hi
        nz = z + uz * hi
        nxt = _classify(nx, ny, nz, tp, df)
        if nxt == 0:
            # Would leave the tube: annihilates at its surface.
            return x + ux * lo, y + uy * lo, z + uz * lo
        x, y, z, m = nx, ny, nz, nxt
    return x, y, z


@njit(**_JIT)
def _annihilation_batch(src, tp, df, dens, s, out):
    for k in range(src.shape[0]):
        m = _classify(src[k, 0], src[k, 1], src[k, 2], tp, df)
        out[k, 0], out[k, 1], out[k, 2] = _annihilation(src[k, 0], src[k, 1], src[k, 2], m, tp, df, dens, s)


@njit(**_JIT)
def _emit_batch(n, tp, df, pp, dens, s, out):
    for k in range(n):
        r = _emit(tp, df, pp, dens, s)
        for c in range(12):
            out[c, k] = r[c]


@njit(**_INLINE)
def _write_single(
    n_out,
    cap,
    event,
    t,
    e_blur,
    hx,
    hy,
    hz,
    crystal,
    nsc,
    sx,
    sy,
    sz,
    o_event,
    o_time,
    o_energy,
    o_pos,
    o_crystal,
    o_scat,
    o_src,
):
    if n_out >= cap:
        return n_out + 1  # counted, not stored: the caller sees the overflow
    o_event[n_out] = event
    o_time[n_out] = t
    o_energy[n_out] = e_blur
    o_pos[0, n_out] = hx
    o_pos[1, n_out] = hy
    o_pos[2, n_out] = hz
    o_crystal[n_out] = crystal
    o_scat[n_out] = nsc
    o_src[0, n_out] = sx
    o_src[1, n_out] = sy
    o_src[2, n_out] = sz
    return n_out + 1


@njit(**_INLINE)
def _decays(
    times,
    first_event,
    tp,
    df,
    cum,
    majorant,
    cdfs,
    ray_e,
    theta,
    cpe,
    cco,
    pp,
    gb,
    gt,
    dens,
    s,
    h_cry,
    h_dep,
    h_pos,
    h_path,
    h_nsc,
    o_event,
    o_time,
    o_energy,
    o_pos,
    o_crystal,
    o_scat,
    o_src,
    n_out,
):
    """Decays ``k`` of ``times`` (time ``times[k]``, EventID ``first_event + k``), one after the
    other from one random stream ``s``, from emission to their singles: those that pass the
    digitizer are written to the ``o_*`` arrays in decay order from index ``n_out`` on (counted,
    not stored, past their end). Returns the next free index. ``times[k]`` is read where the time
    is summed: loaded earlier, the fastmath reassociation regroups that sum and moves the singles'
    times by an ulp (the engine's output is kept bit-identical).

    Readout ``annulus``: one single per detected photon. Readout ``crystal``: the deposits of both
    photons of a decay are collected in the ``h_*`` arrays and summed per crystal (time of the
    earliest, position of the largest deposit or the energy-weighted centroid).

    The one owner of a decay's physics. The CPU engine compiles it on its own as
    :func:`_simulate_chunk`, a chunk per call; the CUDA kernel (:mod:`.fast_cuda`) inlines it and
    runs it for one decay (a slice of one time). For both, it allocates nothing and reads the
    digitizer from ``pp``. It takes 29 arguments: at 31, CPython passes a call's arguments as
    ``*args``, which numba cannot inline."""
    res = pp[PP_RES] * FWHM_TO_SIGMA
    eref = pp[PP_EREF]
    t_sigma = pp[PP_T_SIGMA]
    lo = pp[PP_E_LO]
    hi = pp[PP_E_HI]
    per_crystal = pp[PP_CRYSTAL_READOUT] != 0.0
    centroid = pp[PP_CENTROID] != 0.0
    discretize = pp[PP_DISCRETIZE] != 0.0
    beta_frac = pp[PP_BETA_FRAC]
    cap = o_time.size
    for k in range(times.size):
        if beta_frac < 1.0 and not _u01(s) < beta_frac:
            continue  # electron capture: no positron, no photons
        sx, sy, sz, ax, ay, az, u1x, u1y, u1z, u2x, u2y, u2z = _emit(tp, df, pp, dens, s)
        nh = 0
        for ph in range(2):
            if ph == 0:
                ux, uy, uz = u1x, u1y, u1z
            else:
                ux, uy, uz = u2x, u2y, u2z
            alive, x, y, z, ux, uy, uz, e, path, nsc = _transport(
                ax, ay, az, ux, uy, uz, PHOTON_MEV, tp, df, cum, majorant, cdfs, ray_e, theta, pp, s
            )
            if not alive:
                continue
            if per_crystal:
                nh = _track_boxes(
                    x, y, z, ux, uy, uz, e, path, nsc, cpe, cco, gb, gt, s, h_cry, h_dep, h_pos, h_path, h_nsc, nh
                )
                continue
            edep, hx, hy, hz, hpath, crystal = _detect(x, y, z, ux, uy, uz, e, path, cpe, cco, pp, gt, s)
            if crystal < 0:
                continue
            n1, n2 = _normal_pair(s)
            e_blur = edep + n1 * res * math.sqrt(eref * edep)
            if e_blur < lo or e_blur > hi:
                continue
            n_out = _write_single(
                n_out,
                cap,
                first_event + k,
                times[k] + hpath / C_MM_PER_NS + n2 * t_sigma,
                e_blur,
                hx,
                hy,
                hz,
                crystal,
                nsc,
                sx,
                sy,
                sz,
                o_event,
                o_time,
                o_energy,
                o_pos,
                o_crystal,
                o_scat,
                o_src,
            )
        if nh == 0:
            continue
        # Per-crystal readout of this decay's deposits, in order of first hit (a summed hit's crystal
        # becomes -1, which matches no crystal).
        for h in range(nh):
            c = h_cry[h]
            if c < 0:
                continue
            edep = 0.0
            best = -1.0
            wx = 0.0
            wy = 0.0
            wz = 0.0
            hx = 0.0
            hy = 0.0
            hz = 0.0
            tpath = np.inf
            nsc = 0
            for g in range(h, nh):
                if h_cry[g] != c:
                    continue
                h_cry[g] = -1
                dep = h_dep[g]
                edep += dep
                wx += dep * h_pos[0, g]
                wy += dep * h_pos[1, g]
                wz += dep * h_pos[2, g]
                if dep > best:
                    best = dep
                    hx = h_pos[0, g]
                    hy = h_pos[1, g]
                    hz = h_pos[2, g]
                    nsc = h_nsc[g]
                if h_path[g] < tpath:
                    tpath = h_path[g]
            if not edep > 0.0:
                continue
            if centroid:
                hx = wx / edep
                hy = wy / edep
                hz = wz / edep
            if discretize:
                hx, hy, hz = _crystal_centre(c, pp, gt)
            else:
                hx = np.float64(np.float32(hx))
                hy = np.float64(np.float32(hy))
                hz = np.float64(np.float32(hz))
            n1, n2 = _normal_pair(s)
            e_blur = edep + n1 * res * math.sqrt(eref * edep)
            if e_blur < lo or e_blur > hi:
                continue
            n_out = _write_single(
                n_out,
                cap,
                first_event + k,
                times[k] + tpath / C_MM_PER_NS + n2 * t_sigma,
                e_blur,
                hx,
                hy,
                hz,
                c,
                nsc,
                sx,
                sy,
                sz,
                o_event,
                o_time,
                o_energy,
                o_pos,
                o_crystal,
                o_scat,
                o_src,
            )
    return n_out


# The CPU engine's chunk: the loop compiled as its own function (numba inlines the helpers into it)
# rather than a loop that inlines a per-decay function. Numba's inliner reruns its untyped passes,
# SSA included, at each level of nesting: that extra level made the first compile 64 CPU-s and
# 3.0 GB instead of 35 s and 0.86 GB (docs/benchmarks.md), for the same machine code.
_simulate_chunk = njit(**_JIT)(_decays.py_func)


@njit(**_JIT)
def _transport_batch(pos, dirs, energy, tp, df, cum, majorant, cdfs, ray_e, theta, pp, s, o_alive, o_path, o_scat):
    """Phantom transport of a batch of photons (in place), for tests and diagnostics."""
    for k in range(energy.size):
        alive, x, y, z, ux, uy, uz, e, path, nsc = _transport(
            pos[k, 0],
            pos[k, 1],
            pos[k, 2],
            dirs[k, 0],
            dirs[k, 1],
            dirs[k, 2],
            energy[k],
            tp,
            df,
            cum,
            majorant,
            cdfs,
            ray_e,
            theta,
            pp,
            s,
        )
        o_alive[k] = alive
        pos[k, 0] = x
        pos[k, 1] = y
        pos[k, 2] = z
        dirs[k, 0] = ux
        dirs[k, 1] = uy
        dirs[k, 2] = uz
        energy[k] = e
        o_path[k] = path
        o_scat[k] = nsc


@njit(**_JIT)
def _kn_batch(energy, s, o_cos, o_e):
    for k in range(energy.size):
        o_cos[k], o_e[k] = _klein_nishina(energy[k], s)


@njit(**_JIT)
def _classify_batch(x, y, z, tp, df, out):
    for k in range(x.size):
        out[k] = _classify(x[k], y[k], z[k], tp, df)


def sample_klein_nishina(energy_mev: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The compiled Klein-Nishina sampler on an array (for tests): (cos_theta, scattered energy)."""
    e = np.ascontiguousarray(energy_mev, dtype=np.float64)
    c, o = np.empty_like(e), np.empty_like(e)
    _kn_batch(e, seed_state(rng), c, o)
    return c, o


# ---- the engine ------------------------------------------------------------------------------


def pack_tube(tube: TubePhantom) -> tuple[np.ndarray, np.ndarray]:
    """The tube and its defects as the kernels' parameter arrays (tp, df)."""
    tp = np.zeros(TP_N)
    tp[TP_A], tp[TP_B], tp[TP_WALL] = tube.a_mm, tube.b_mm, tube.wall_mm
    wv = tube.wall_mm * tube.wall_variation
    tp[TP_WVAR_C], tp[TP_WVAR_S] = wv * math.cos(tube.wall_phase), wv * math.sin(tube.wall_phase)
    tp[TP_WALL_MAX] = tube.wall_mm * (1.0 + tube.wall_variation)
    tp[TP_CPSI], tp[TP_SPSI] = math.cos(tube.psi), math.sin(tube.psi)
    tp[TP_BEND] = tube.bend_mm
    tp[TP_CBEND], tp[TP_SBEND] = math.cos(tube.bend_direction), math.sin(tube.bend_direction)
    tp[TP_HALF_LEN] = tube.length_mm / 2
    tp[TP_R_BOUND] = tube.bounding_radius_mm
    tp[TP_H_BOUND] = tube.length_mm / 2 + 1.0
    tp[TP_INV_A2], tp[TP_INV_B2] = 1.0 / tube.a_mm**2, 1.0 / tube.b_mm**2
    sa, sb = safe_lumen_ellipse(tube)
    tp[TP_INV_SA2], tp[TP_INV_SB2] = 1.0 / sa**2, 1.0 / sb**2
    df = np.zeros((len(tube.defects), DF_N))
    for k, d in enumerate(tube.defects):
        row = df[k]
        row[DF_KIND] = DEFECT_LABELS[d.type]
        row[DF_CU], row[DF_CV], row[DF_CZ] = d.local_centre
        if d.type == "crack":
            row[DF_EXT] = d.size["length_mm"] / 2
            row[DF_P1] = d.size["width_mm"] / 2
            row[DF_P2], row[DF_P3] = math.cos(d.phi), math.sin(d.phi)
        elif d.type == "pit":
            row[DF_EXT] = row[DF_P1] = d.size["radius_mm"]
            row[DF_P2] = d.size["depth_fraction"]
        elif d.type == "blockage":
            row[DF_EXT] = row[DF_P2] = d.size["length_mm"] / 2
            row[DF_P1] = d.size["radius_mm"]
        else:
            row[DF_EXT] = row[DF_P1] = d.size["radius_mm"]
    return tp, df


def safe_lumen_ellipse(tube: TubePhantom, margin_mm: float = 0.25) -> tuple[float, float]:
    """Semi-axes of an ellipse that lies inside the lumen at every azimuth, by ``margin_mm``.

    Points inside it are lumen without evaluating the wall (no square roots). Shrunk from
    (a - t_max, b - t_max) until the radial gap to the inner wall surface, checked on a fine
    azimuth grid, is at least the margin (the surfaces are smooth: their radii vary by far less
    than the margin between grid points); (0, 0) disables the shortcut.
    """
    phi = np.linspace(0.0, 2.0 * np.pi, 20001)
    r_in = tube.r_in(phi)
    t_max = tube.wall_mm * (1.0 + tube.wall_variation)
    c, s = np.cos(phi), np.sin(phi)
    for shrink in np.arange(0.0, 20.0, 0.25):
        sa, sb = tube.a_mm - t_max - shrink, tube.b_mm - t_max - shrink
        if sa <= 0 or sb <= 0:
            break
        r_safe = sa * sb / np.sqrt((sb * c) ** 2 + (sa * s) ** 2)
        if np.all(r_in - r_safe >= margin_mm):
            return float(sa), float(sb)
    return 1e-300, 1e-300


class NumbaEngine:
    """The compiled fast engine for one scan (the interface of :class:`.fast.FastEngine`).

    Params:
        tube: the phantom of this scan.
        scanner: the scanner.
        digitizer: the digitizer settings.
        acquisition: activity, duration and transport settings.
    """

    separates_scatter = True

    def __init__(self, tube: TubePhantom, scanner: Scanner, digitizer: Digitizer, acquisition: Acquisition):
        self.tube = tube
        self.scanner = scanner
        self.digitizer = digitizer
        self.acq = acquisition
        table = mat.MaterialTable(tube.materials, rayleigh=acquisition.rayleigh)
        self.cum = np.ascontiguousarray(
            np.stack([table.photo, table.photo + table.compton, table.photo + table.compton + table.rayl])
        )
        self.majorant = np.ascontiguousarray(table.majorant)
        if acquisition.rayleigh:
            ray = mat.RayleighSampler(tube.materials)
            self.cdfs, self.ray_e, self.theta = np.ascontiguousarray(ray.cdfs), ray.energies, ray.theta
        else:
            self.cdfs, self.ray_e, self.theta = np.zeros((1, 1, 2)), np.ones(1), np.zeros(2)
        crystal = mat.MaterialTable([scanner.crystal_material], rayleigh=False)
        self.cpe = np.ascontiguousarray(crystal.photo[0])
        self.cco = np.ascontiguousarray(crystal.compton[0])
        self.tp, self.df = pack_tube(tube)
        lo, hi = digitizer.energy_window_mev
        self.e_cut = max(lo - 5.0 * float(self.energy_sigma(lo)), mat.E_MIN_MEV)
        pp = np.zeros(PP_N)
        pp[PP_E_CUT] = self.e_cut
        pp[PP_MAX_ORDERS] = acquisition.max_scatter_orders
        pp[PP_RAYLEIGH] = float(acquisition.rayleigh)
        pp[PP_ACOL_SIGMA] = math.radians(acquisition.acollinearity_fwhm_deg) * FWHM_TO_SIGMA
        pp[PP_POS_RANGE] = float(acquisition.positron_range)
        pp[PP_RES] = digitizer.energy_resolution
        pp[PP_EREF] = digitizer.energy_reference_mev
        pp[PP_T_SIGMA] = digitizer.time_sigma_ns
        pp[PP_E_LO], pp[PP_E_HI] = lo, hi
        pp[PP_R_IN], pp[PP_R_OUT] = scanner.inner_radius_mm, scanner.outer_radius_mm
        pp[PP_HALF_AX] = scanner.axial_length_mm / 2
        pp[PP_NCRYS], pp[PP_RINGS] = scanner.crystals_per_ring, scanner.rings
        pp[PP_AX_PITCH] = scanner.axial_pitch_mm
        pp[PP_CRYSTAL_READOUT] = float(digitizer.readout == "crystal")
        pp[PP_CENTROID] = float(digitizer.readout_policy == "energy_centroid")
        pp[PP_DISCRETIZE] = float(digitizer.readout_discretize)
        pp[PP_BETA_FRAC] = acquisition.beta_plus_fraction
        self.pp = pp
        self.gb = BoxRing.from_scanner(scanner).packed()
        self.gt = box_tables(scanner.crystals_per_ring)
        self.dens = positron.relative_densities(tube.materials)
        self.h_cry = np.zeros(MAX_HITS, np.int64)
        self.h_dep = np.zeros(MAX_HITS)
        self.h_pos = np.zeros((3, MAX_HITS))
        self.h_path = np.zeros(MAX_HITS)
        self.h_nsc = np.zeros(MAX_HITS, np.int64)
        # The 176Lu background: the numpy implementation shared with the reference engine (its
        # own random stream, so both engines give the same background singles for a seed).
        self.background = make_background(scanner, digitizer, acquisition, np.float32, None)

    def compile(self) -> None:
        """Compile the kernels (or load them from numba's on-disk cache) with a tiny throwaway
        chunk, so that timing the scan separates it; the scan's random stream is not touched."""
        self.simulate_chunk(np.linspace(0.0, 1.0, 8), 0, np.random.default_rng(0))

    def energy_sigma(self, e_mev: np.ndarray | float) -> np.ndarray:
        """Energy resolution sigma (MeV): FWHM = resolution x sqrt(E_ref E)."""
        return self.digitizer.energy_sigma(e_mev)

    def decay_chunks(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """Decay times (ns) of the whole acquisition in time-ordered chunks (see FastEngine)."""
        return FastEngine.decay_chunks(self, rng)

    expected_chunks = FastEngine.expected_chunks

    def chunks(self, rng: np.random.Generator) -> Iterator[tuple[dict[str, np.ndarray], float, int]]:
        """The whole scan as chunks of singles (see :meth:`.fast.FastEngine.chunks`)."""
        yield from fast_chunks(self, rng)

    def simulate_chunk(self, times: np.ndarray, first_event: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Simulate the decays at ``times`` and return the singles that pass the digitizer.

        Params:
            times: decay times (ns), sorted.
            first_event: EventID of the first decay of the chunk.
            rng: the scan's Generator (seeds this chunk's xoshiro256+ state).
        Returns:
            Singles columns (GATE branch names + truth, without ``PreStepUniqueVolumeID``, which
            the writer derives from ``CrystalID``), in decay order, not yet time-sorted.
        """
        times = np.ascontiguousarray(times, dtype=np.float64)
        state = seed_state(rng)
        # Two singles per decay at most in the default window (a photon deposits at most 511 keV);
        # a wide window can give more: on overflow the chunk is rerun, same random state, larger.
        cap = 2 * times.size + 64
        while True:
            event = np.empty(cap, np.int64)
            t = np.empty(cap)
            energy = np.empty(cap, np.float32)
            pos = np.empty((3, cap), np.float32)
            crystal = np.empty(cap, np.int32)
            scat = np.empty(cap, np.int16)
            src = np.empty((3, cap), np.float32)
            n = _simulate_chunk(
                times,
                first_event,
                self.tp,
                self.df,
                self.cum,
                self.majorant,
                self.cdfs,
                self.ray_e,
                self.theta,
                self.cpe,
                self.cco,
                self.pp,
                self.gb,
                self.gt,
                self.dens,
                state.copy(),
                self.h_cry,
                self.h_dep,
                self.h_pos,
                self.h_path,
                self.h_nsc,
                event,
                t,
                energy,
                pos,
                crystal,
                scat,
                src,
                0,
            )
            if n <= cap:
                break
            cap = n
        return {
            "EventID": event[:n],
            "GlobalTime": t[:n],
            "TotalEnergyDeposit": energy[:n],
            "PostPosition_X": pos[0, :n],
            "PostPosition_Y": pos[1, :n],
            "PostPosition_Z": pos[2, :n],
            "CrystalID": crystal[:n],
            "PhantomScatters": scat[:n],
            "SourcePosition_X": src[0, :n],
            "SourcePosition_Y": src[1, :n],
            "SourcePosition_Z": src[2, :n],
        }

    # ---- kernels exposed for tests ------------------------------------------------------------

    def transport_phantom(self, ph: Photons, rng: np.random.Generator) -> Photons:
        """Track photons through the tube (in place; see FastEngine.transport_phantom)."""
        idx = np.flatnonzero(ph.alive)
        pos = np.ascontiguousarray(ph.pos[idx], dtype=np.float64)
        dirs = np.ascontiguousarray(ph.dir[idx], dtype=np.float64)
        energy = np.ascontiguousarray(ph.energy[idx], dtype=np.float64)
        alive = np.empty(idx.size, np.bool_)
        path = np.empty(idx.size)
        scat = np.empty(idx.size, np.int16)
        _transport_batch(
            pos,
            dirs,
            energy,
            self.tp,
            self.df,
            self.cum,
            self.majorant,
            self.cdfs,
            self.ray_e,
            self.theta,
            self.pp,
            seed_state(rng),
            alive,
            path,
            scat,
        )
        ph.pos[idx], ph.dir[idx], ph.energy[idx] = pos, dirs, energy
        ph.path[idx] = ph.path[idx] + path
        ph.scatters[idx] = ph.scatters[idx] + scat
        ph.alive[idx] = alive
        return ph

    def emit(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, Photons]:
        """n decays from the compiled emission (see FastEngine.emit; the times are not used).

        Returns:
            (decay positions (n, 3), photons (2n,): photon k and k + n belong to decay k).
        """
        out = np.empty((12, n))
        _emit_batch(n, self.tp, self.df, self.pp, self.dens, seed_state(rng), out)
        pos = np.concatenate([out[3:6].T, out[3:6].T])
        dirs = np.concatenate([out[6:9].T, out[9:12].T])
        return np.ascontiguousarray(out[0:3].T), Photons(
            pos=pos,
            dir=dirs,
            energy=np.full(2 * n, PHOTON_MEV),
            path=np.zeros(2 * n),
            scatters=np.zeros(2 * n, np.int16),
            alive=np.ones(2 * n, bool),
        )

    def annihilation_points(self, src: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Annihilation points (n, 3) of positrons emitted at ``src`` (n, 3), from the compiled
        kernel (for tests against :func:`.positron.annihilation_points`)."""
        src = np.ascontiguousarray(src, dtype=np.float64)
        out = np.empty_like(src)
        _annihilation_batch(src, self.tp, self.df, self.dens, seed_state(rng), out)
        return out

    def classify(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Material ids from the compiled classifier (for tests against TubePhantom.classify)."""
        x, y, z = (np.ascontiguousarray(np.ravel(c), dtype=np.float64) for c in (x, y, z))
        out = np.empty(x.size, np.uint8)
        _classify_batch(x, y, z, self.tp, self.df, out)
        return out
