"""Per-crystal readout in box crystals (``digitizer.readout: crystal``) against an independent
tracker written here: Woodcock tracking through the GATE scene's boxes with a brute-force
point-in-box test (no cell walk, no slab intersections), for 511 keV photons from the centre.

Known answers (issue 14's audit of the GATE scene): about a third of the interacting photons
deposit in more than one crystal, and reading out per crystal keeps about 0.7x the singles in the
350-650 keV window that summing each photon's deposits would give.
"""

import math

import numpy as np
import pytest

from positrongan import config as configlib
from positrongan.geometry.scanner import Scanner
from positrongan.simulate import materials as mat
from positrongan.simulate.crystals import BoxRing, next_box
from positrongan.simulate.driver import draw_phantom, engine_parts, make_engine
from positrongan.simulate.fast import MAX_CRYSTAL_INTERACTIONS, FastEngine
from positrongan.simulate.gate import crystal_box_mm

from helpers import uniform_tube

N = 60_000
WINDOW = (0.350, 0.650)


def _scanner():
    return Scanner.from_config(configlib.validate({})["scanner"])


def _directions(n, rng, sc):
    # Isotropic, restricted to those that reach the rings' inner face within the axial extent.
    u = mat.isotropic(4 * n, rng)
    half = sc.axial_length_mm / 2 * 0.9
    ok = np.abs(u[:, 2]) / np.hypot(u[:, 0], u[:, 1]) * sc.inner_radius_mm < half
    return u[ok][:n]


def _inside_box(p, sc):
    """CrystalID of the box holding each point (-1: none), by testing the three nearest crystals."""
    depth, width, axial = crystal_box_mm(sc)
    n = sc.crystals_per_ring
    phi = np.arctan2(p[1], p[0])
    near = np.rint(phi * n / (2 * np.pi)).astype(np.int64)
    ring = np.floor(p[2] / sc.axial_pitch_mm + sc.rings / 2).astype(np.int64)
    out = np.full(p.shape[1], -1, np.int64)
    for d in (-1, 0, 1):
        i = np.mod(near + d, n)
        a = 2 * np.pi * i / n
        rad = p[0] * np.cos(a) + p[1] * np.sin(a)
        tan = -p[0] * np.sin(a) + p[1] * np.cos(a)
        zc = (ring - (sc.rings - 1) / 2) * sc.axial_pitch_mm
        ok = (
            (rad >= sc.inner_radius_mm)
            & (rad <= sc.inner_radius_mm + depth)
            & (np.abs(tan) <= width / 2)
            & (np.abs(p[2] - zc) <= axial / 2)
            & (ring >= 0)
            & (ring < sc.rings)
        )
        out[ok] = ring[ok] * n + i[ok]
    return out


def independent_tracker(u, sc, rng):
    """Deposits (photon, crystal, energy) of 511 keV photons from the origin along ``u`` (n, 3)."""
    lyso = mat.MaterialTable([sc.crystal_material], rayleigh=False)
    g = BoxRing.from_scanner(sc)
    n = u.shape[0]
    p = np.zeros((3, n))
    d = u.T.copy()
    e = np.full(n, 0.511)
    idx = np.arange(n)
    n_int = np.zeros(n, np.int64)
    rows, crys, deps = [], [], []
    while idx.size:
        mu_pe, mu_c = lyso.photo_compton(e)
        mu = mu_pe + mu_c  # majorant: LYSO everywhere; a null collision outside the boxes
        p += d * (rng.standard_exponential(idx.size) / mu)
        out = (np.hypot(p[0], p[1]) > g.r_max) | (np.abs(p[2]) > g.z_half)
        c = _inside_box(p, sc)
        real = (c >= 0) & ~out
        j = np.flatnonzero(real)
        photo = rng.random(j.size) * mu[j] < mu_pe[j]
        dep = e[j].copy()
        jc = np.flatnonzero(~photo)
        cos_t, e_new = mat.sample_klein_nishina(e[j][jc], rng)
        dep[jc] -= e_new
        rows.append(idx[j]), crys.append(c[j]), deps.append(dep)
        e[j[jc]] = e_new
        d[:, j[jc]] = mat.rotate_uvw(d[:, j[jc]], cos_t, rng)
        n_int[j] += 1
        dead = out.copy()
        dead[j[photo]] = True
        dead |= n_int >= MAX_CRYSTAL_INTERACTIONS
        keep = np.flatnonzero(~dead)
        p, d, e, idx, n_int = p[:, keep], d[:, keep], e[keep], idx[keep], n_int[keep]
    return np.concatenate(rows), np.concatenate(crys), np.concatenate(deps)


def _summary(photon, crystal, edep, n):
    """(fraction of interacting photons in > 1 crystal, in-window singles per photon with
    per-crystal readout, the same when each photon's deposits are summed)."""
    key = photon * 10**6 + crystal
    uk, inv = np.unique(key, return_inverse=True)
    per_crystal = np.bincount(inv, weights=edep)
    ph_of = uk // 10**6
    n_crys = np.bincount(ph_of, minlength=n)
    total = np.bincount(photon, weights=edep, minlength=n)
    interacting = n_crys > 0
    multi = (n_crys[interacting] > 1).mean()
    single_win = ((per_crystal >= WINDOW[0]) & (per_crystal <= WINDOW[1])).sum() / n
    sum_win = ((total >= WINDOW[0]) & (total <= WINDOW[1])).sum() / n
    return multi, single_win, sum_win, interacting.sum()


def _engine_deposits(u, sc, rng):
    eng = FastEngine(*engine_parts(configlib.validate({}), uniform_tube(), sc))
    n = u.shape[0]
    st = np.zeros((10, n))
    st[3:6] = u.T
    st[6] = 0.511
    st[9] = np.arange(n)
    det = eng._detect_crystal(st, rng, n)  # grouping per decay = per photon here
    return det["row"], det["crystal"].astype(np.int64), det["edep"]


def test_per_crystal_readout_loss_matches_an_independent_tracker():
    sc = _scanner()
    rng = np.random.default_rng(2024)
    u = _directions(N, rng, sc)
    ref = _summary(*independent_tracker(u, sc, np.random.default_rng(1)), N)
    got = _summary(*_engine_deposits(u, sc, np.random.default_rng(2)), N)
    # Binomial proportions from independent runs: 5 sigma of the difference.
    for a, b, m in ((ref[0], got[0], ref[3]), (ref[1], got[1], N), (ref[2], got[2], N)):
        sd = math.sqrt(a * (1 - a) / m + b * (1 - b) / m)
        assert abs(a - b) < 5 * sd, (ref, got)
    # The audit's magnitudes: ~36 % multi-crystal, ~0.73x in-window singles.
    assert 0.28 < ref[0] < 0.45, ref
    assert 0.62 < ref[1] / ref[2] < 0.82, ref


def test_the_walk_finds_the_first_box_of_a_ray():
    sc = _scanner()
    g = BoxRing.from_scanner(sc)
    rng = np.random.default_rng(5)
    # Rays from random points in the bore and in the crystal shell, random directions.
    m = 4000
    r = rng.uniform(0, g.r_max, m)
    a = rng.uniform(0, 2 * np.pi, m)
    p = np.stack([r * np.cos(a), r * np.sin(a), rng.uniform(-100, 100, m)])
    p = p[:, _inside_box(p, sc) < 0]  # start outside every box
    u = mat.isotropic(p.shape[1], rng).T
    t_in, t_out, crystal = next_box(g, p, u)
    hit = crystal >= 0
    # Inside the box found, just after entry and just before exit ...
    for t in (t_in[hit] + 1e-6, t_out[hit] - 1e-6, 0.5 * (t_in[hit] + t_out[hit])):
        assert np.array_equal(_inside_box(p[:, hit] + u[:, hit] * t, sc), crystal[hit])
    # ... and no box before it: sample the ray densely up to the entry (or to the outer radius).
    t_end = np.where(hit, t_in, 2 * g.r_max + 400)
    for f in np.linspace(0.0, 0.999, 400):
        q = p + u * (f * t_end)
        inside = _inside_box(q, sc) >= 0
        assert not inside.any(), f


def _kernel_singles(kernel, digitizer, seed, decays=60_000):
    cfg = configlib.validate(
        {
            "seed": 0,
            "scanner": {"crystals_per_ring": 96, "rings": 8},
            "digitizer": digitizer,
            "phantom": {"activity_bq": 1e6, "acquisition_s": decays / 1e6, "length_mm": 30.0},
            "simulation": {"chunk_decays": 30_000},
        }
    )
    args = engine_parts(cfg, draw_phantom(cfg, "scan_000"))
    sc = args[1]
    eng = make_engine(kernel, *args)
    n, parts = 0, []
    for singles, _, k in eng.chunks(np.random.default_rng(seed)):
        n += k
        parts.append(singles)
    cat = {key: np.concatenate([p[key] for p in parts]) for key in ("PostPosition_X", "PostPosition_Y", "CrystalID")}
    return n, cat, sc


@pytest.mark.parametrize(
    "digitizer",
    [
        {"readout": "annulus", "readout_discretize": False},
        {"readout": "crystal", "readout_policy": "energy_centroid", "readout_discretize": False},
    ],
)
def test_both_kernels_agree_for_every_readout_setting(digitizer):
    (na, a, sc), (nb, b, _) = (_kernel_singles(k, digitizer, s) for k, s in (("numba", 1), ("numpy", 2)))
    ra, rb = a["CrystalID"].size / na, b["CrystalID"].size / nb
    assert abs(ra - rb) < 5 * math.sqrt(ra / na + rb / nb), (ra, rb)
    # The readout position: its mean depth in the ring agrees, and it lies in its crystal's cell.
    da = np.hypot(a["PostPosition_X"], a["PostPosition_Y"]) - sc.inner_radius_mm
    db = np.hypot(b["PostPosition_X"], b["PostPosition_Y"]) - sc.inner_radius_mm
    assert abs(da.mean() - db.mean()) < 5 * math.sqrt(da.var() / da.size + db.var() / db.size)
    assert da.mean() < sc.crystal_depth_mm / 2  # interactions cluster at the front, not the centre
    for s in (a, b):
        phi = np.arctan2(s["PostPosition_Y"], s["PostPosition_X"])
        index = np.mod(np.rint(phi * sc.crystals_per_ring / (2 * np.pi)).astype(int), sc.crystals_per_ring)
        assert np.array_equal(index, s["CrystalID"] % sc.crystals_per_ring)
