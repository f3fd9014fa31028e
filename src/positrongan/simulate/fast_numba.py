"""The fast engine compiled with numba: the physics of :mod:`.fast`, one photon at a time.

Same scene, same physics and same outputs as the numpy reference (:class:`.fast.FastEngine`,
whose module docstring describes the model): decay positions uniform in the fluid, optional
positron range, back-to-back photons with acollinearity, Woodcock tracking through the tube
against the majorant of its materials (photoelectric, Klein-Nishina Compton, Rayleigh from the
form-factor tables, up to ``max_scatter_orders``, the ``E_cut`` drop), crystal tracking in the
annulus (photoelectric / Compton, Compton escape, at most ``MAX_CRYSTAL_INTERACTIONS``
interactions, energy-winner readout), and the digitizer (energy and time blur, energy window).
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
from .fast import (
    C_MM_PER_NS,
    MAX_CRYSTAL_INTERACTIONS,
    PHOTON_MEV,
    POSITRON_RANGE_MEAN_MM,
    FastEngine,
    Photons,
    fast_chunks,
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
    PP_N,
) = range(17)

E_MIN = mat.E_MIN_MEV
N_E = mat.N_ENERGIES
DE = (mat.E_MAX_MEV - mat.E_MIN_MEV) / (mat.N_ENERGIES - 1)
ME = mat.ELECTRON_MASS_MEV
INV_DE = 1.0 / DE
INV_2_53 = 1.0 / 9007199254740992.0
TWO_PI = 2.0 * math.pi

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
        c_pe = _lookup3(cum, 0, m, i, w)
        if r < c_pe:
            return False, x, y, z, ux, uy, uz, e, path, nsc
        c_pc = _lookup3(cum, 1, m, i, w)
        if r < c_pc:
            if nsc >= max_orders:
                return False, x, y, z, ux, uy, uz, e, path, nsc
            cos_t, e = _klein_nishina(e, s)
            ux, uy, uz = _rotate(ux, uy, uz, cos_t, s)
            nsc += 1
            new_segment = True
            if e < e_cut:
                return False, x, y, z, ux, uy, uz, e, path, nsc
        elif r < _lookup3(cum, 2, m, i, w):
            if nsc >= max_orders:
                return False, x, y, z, ux, uy, uz, e, path, nsc
            cos_t = _rayleigh_cos(cdfs, ray_e, theta, m, e, s)
            ux, uy, uz = _rotate(ux, uy, uz, cos_t, s)
            nsc += 1
            new_segment = True


@njit(**_INLINE)
def _detect(x, y, z, ux, uy, uz, e, path, cpe, cco, pp, s):
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
        photo = _u01(s) * mu < mu_pe
        if photo:
            dep = e
        else:
            cos_t, e_new = _klein_nishina(e, s)
            dep = e - e_new
            e = e_new
            ux, uy, uz = _rotate(ux, uy, uz, cos_t, s)
        edep += dep
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
    # Positions are stored as float32: locate the crystal from the stored values, so the file's
    # CrystalID and PostPosition always agree (as the numpy engine does).
    fx = np.float64(np.float32(bx))
    fy = np.float64(np.float32(by))
    fz = np.float64(np.float32(bz))
    ncrys = int(pp[PP_NCRYS])
    rings = int(pp[PP_RINGS])
    phi = math.atan2(fy, fx)
    if phi < 0.0:
        phi += TWO_PI
    index = int(np.rint(phi * ncrys / TWO_PI)) % ncrys
    ring = int(math.floor(fz / pp[PP_AX_PITCH] + rings / 2))
    crystal = ring * ncrys + index if 0 <= ring < rings else -1
    return edep, fx, fy, fz, bpath, crystal


# ---- one chunk -------------------------------------------------------------------------------


@njit(**_INLINE)
def _emit(tp, df, pp, s):
    """One decay: its position, the annihilation point and the two photons' directions."""
    sx, sy, sz = _sample_fluid(tp, df, s)
    ax, ay, az = sx, sy, sz
    if pp[PP_POS_RANGE] != 0.0:
        # gamma(2, mean / 2): the sum of two exponentials of mean 0.3 mm.
        length = -0.5 * POSITRON_RANGE_MEAN_MM * math.log(_u_pos(s) * _u_pos(s))
        dx, dy, dz = _isotropic(s)
        ax += dx * length
        ay += dy * length
        az += dz * length
    u1x, u1y, u1z = _isotropic(s)
    acol = pp[PP_ACOL_SIGMA]
    if acol > 0.0:
        g1, g2 = _normal_pair(s)
        dev = acol * math.sqrt(g1 * g1 + g2 * g2)
        u2x, u2y, u2z = _rotate(-u1x, -u1y, -u1z, math.cos(dev), s)
    else:
        u2x, u2y, u2z = -u1x, -u1y, -u1z
    return sx, sy, sz, ax, ay, az, u1x, u1y, u1z, u2x, u2y, u2z


@njit(**_JIT)
def _emit_batch(n, tp, df, pp, s, out):
    for k in range(n):
        r = _emit(tp, df, pp, s)
        for c in range(12):
            out[c, k] = r[c]


@njit(**_JIT)
def _simulate_chunk(
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
    s,
    o_event,
    o_time,
    o_energy,
    o_pos,
    o_crystal,
    o_scat,
    o_src,
):
    """Simulate the decays at ``times``; write the singles that pass the digitizer into the
    ``o_*`` arrays (capacity 2 n) in decay order, photon 1 before photon 2. Returns their count."""
    n_out = 0
    res = pp[PP_RES] * FWHM_TO_SIGMA
    eref = pp[PP_EREF]
    t_sigma = pp[PP_T_SIGMA]
    lo = pp[PP_E_LO]
    hi = pp[PP_E_HI]
    for k in range(times.size):
        sx, sy, sz, ax, ay, az, u1x, u1y, u1z, u2x, u2y, u2z = _emit(tp, df, pp, s)
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
            edep, hx, hy, hz, hpath, crystal = _detect(x, y, z, ux, uy, uz, e, path, cpe, cco, pp, s)
            if crystal < 0:
                continue
            n1, n2 = _normal_pair(s)
            e_blur = edep + n1 * res * math.sqrt(eref * edep)
            if e_blur < lo or e_blur > hi:
                continue
            o_event[n_out] = first_event + k
            o_time[n_out] = times[k] + hpath / C_MM_PER_NS + n2 * t_sigma
            o_energy[n_out] = e_blur
            o_pos[0, n_out] = hx
            o_pos[1, n_out] = hy
            o_pos[2, n_out] = hz
            o_crystal[n_out] = crystal
            o_scat[n_out] = nsc
            o_src[0, n_out] = sx
            o_src[1, n_out] = sy
            o_src[2, n_out] = sz
            n_out += 1
    return n_out


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
        self.pp = pp

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
        cap = 2 * times.size
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
            seed_state(rng),
            event,
            t,
            energy,
            pos,
            crystal,
            scat,
            src,
        )
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
        _emit_batch(n, self.tp, self.df, self.pp, seed_state(rng), out)
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

    def classify(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Material ids from the compiled classifier (for tests against TubePhantom.classify)."""
        x, y, z = (np.ascontiguousarray(np.ravel(c), dtype=np.float64) for c in (x, y, z))
        out = np.empty(x.size, np.uint8)
        _classify_batch(x, y, z, self.tp, self.df, out)
        return out
