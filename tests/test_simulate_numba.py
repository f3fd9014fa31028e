"""The compiled (numba) fast engine against known answers and against the numpy reference.

Known answers for its kernels: the phantom classifier equals TubePhantom.classify point for
point; the azimuthal cell lookup equals the rounded atan2; the crystal tracker's first interactions
fall along each ray's boxes (the numpy walk's) as Beer-Lambert says; Beer-Lambert
transmission through an aluminium wall; the Klein-Nishina angular distribution (chi-square) and
the Compton energy-angle relation; the acollinearity FWHM and the F-18 positron range. Against the numpy reference (``simulation.kernel: numpy``), seeded scans of
the default scanner and phantom must give the same singles, prompts, trues, scatters, randoms
and delayed per decay, the same scatter fraction and the same singles energy spectrum, within
statistics (independent runs: differences within 5 standard deviations; chi-square p > 1e-4).
The compiled coincidence sorter gives exactly the pairs of the vectorised one, and
``simulation.write_singles: false`` leaves the coincidence trees unchanged.
"""

import json
import math

import numba
import numpy as np
import pytest
from scipy import integrate, stats

from helpers import assert_same_rates, fast_scan, radial_photons, ring_engine, two_sample_chi2, uniform_tube

from positrongan import config as configlib
from positrongan.coincidences import POLICIES, StreamSorter, apply_policy, sorted_pairs, window_pairs
from positrongan.geometry.phantom import TubePhantom
from positrongan.rootfile import read_tree
from positrongan.simulate import fast_numba as fnb
from positrongan.simulate import materials as mat
from positrongan.simulate.crystals import BoxRing, next_box


def _uniform_tube(**overrides):
    # A long, thick-walled tube (200 mm, 50 mm radius, 20 mm wall): long known path lengths.
    return uniform_tube(**{"length_mm": 200.0, "a_mm": 50.0, "b_mm": 50.0, "wall_mm": 20.0, **overrides})


def _engine(tube, phantom=None, **sim):
    return ring_engine("numba", tube, simulation={"max_scatter_orders": 0, **sim}, phantom=phantom or {})


def test_compiled_classifier_equals_the_phantom_point_for_point():
    # Many defects of every kind, a bend, an elliptical section with a varying wall.
    cfg = configlib.validate(
        {
            "phantom": {
                "bend_mm": [4.0, 6.0],
                "defects": {
                    "cracks": {"count": [3, 3]},
                    "pits": {"count": [3, 3]},
                    "blockages": {"count": [2, 2]},
                    "bubbles": {"count": [3, 3]},
                },
            }
        }
    )
    tube = TubePhantom.draw(cfg["phantom"], np.random.default_rng(4))
    eng = _engine(tube)
    rng = np.random.default_rng(0)
    n = 400_000
    x, y, z = rng.uniform(-42, 42, n), rng.uniform(-42, 42, n), rng.uniform(-110, 110, n)
    # Also points near every defect, where the shapes are decided.
    near = [np.array(d.centre_mm) + rng.normal(0, 3.0, (20_000, 3)) for d in tube.defects]
    x, y, z = (np.concatenate([c] + [p[:, k] for p in near]) for k, c in enumerate((x, y, z)))
    got = eng.classify(x, y, z)
    want = tube.classify(x, y, z)
    assert np.array_equal(got, want)
    assert set(np.unique(want)) == {0, 1, 2, 3, 4}


@numba.njit
def _sectors(x, y, n, gt, guess):
    out = np.empty(x.size, np.int64)
    for k in range(x.size):
        out[k] = fnb._sector(x[k], y[k], n, gt, guess[k])
    return out


@pytest.mark.parametrize("n", [7, 96, 184, 368])
def test_compiled_sector_lookup_equals_the_rounded_atan2(n):
    # The crystal walk finds a point's azimuthal cell without atan2 (an estimate, or the previous
    # cell as a guess, then the exact boundary test); it must give rint(atan2 n / 2 pi) mod n
    # (Scanner.locate) everywhere, including within 1e-9 rad of the cell boundaries and on the
    # axes, from no guess (-1) and from any guess.
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(2, 100_000)) * 100.0
    edge = 2 * np.pi * (rng.integers(0, n, 50_000) + 0.5) / n + rng.choice([-1e-9, 1e-9], 50_000)
    r = rng.uniform(100.0, 150.0, 50_000)
    x = np.concatenate([x, r * np.cos(edge), [1.0, 0.0, -1.0, 0.0, 1e-300]])
    y = np.concatenate([y, r * np.sin(edge), [0.0, 1.0, 0.0, -1.0, 1e-300]])
    expected = np.rint(np.mod(np.arctan2(y, x), 2 * np.pi) * n / (2 * np.pi)).astype(np.int64) % n
    gt = fnb.box_tables(n)
    np.testing.assert_array_equal(_sectors(x, y, n, gt, np.full(x.size, -1)), expected)
    np.testing.assert_array_equal(_sectors(x, y, n, gt, rng.integers(0, n, x.size)), expected)


@numba.njit
def _first_interactions(p, u, cpe, cco, gb, gt, s):
    """Crystal, position and path of each ray's first interaction in the compiled tracker."""
    m = p.shape[1]
    crystal = np.full(m, -1)
    pos = np.full((3, m), np.nan)
    path = np.full(m, np.nan)
    h_cry = np.empty(fnb.MAX_HITS, np.int64)
    h_dep = np.empty(fnb.MAX_HITS)
    h_pos = np.empty((3, fnb.MAX_HITS))
    h_path = np.empty(fnb.MAX_HITS)
    h_nsc = np.empty(fnb.MAX_HITS, np.int16)
    for k in range(m):
        nh = fnb._track_boxes(
            p[0, k], p[1, k], p[2, k], u[0, k], u[1, k], u[2, k], fnb.PHOTON_MEV, 0.0, 0,
            cpe, cco, gb, gt, s, h_cry, h_dep, h_pos, h_path, h_nsc, 0,
        )  # fmt: skip
        if nh > 0:
            crystal[k] = h_cry[0]
            pos[:, k] = h_pos[:, 0]
            path[k] = h_path[0]
    return crystal, pos, path


def test_compiled_crystal_tracking_puts_first_interactions_where_beer_lambert_does():
    # The compiled tracker flies Woodcock steps through the shell of the boxes; the numpy walk
    # (crystals.next_box, an independent method) lists the boxes each ray crosses, which fixes
    # where the first interaction must fall: at LYSO depth tau along the ray (the summed chords of
    # the boxes before it plus the way into its own) with P(tau) = 1 - exp(-mu tau). So
    # F = P(tau) / P(all the ray's LYSO) is uniform for the rays that interact, and a ray
    # interacts with probability P(all). Rays start in the bore, in the gaps and inside boxes,
    # in every direction (inward ones cross the bore to the far side of the ring).
    eng = _engine(_uniform_tube())
    g = BoxRing.from_scanner(eng.scanner)
    rng = np.random.default_rng(11)
    m = 100_000
    r = np.sqrt(rng.uniform(0, g.r_max**2, m))
    a = rng.uniform(0, 2 * np.pi, m)
    p = np.stack([r * np.cos(a), r * np.sin(a), rng.uniform(-g.z_half, g.z_half, m)])
    u = mat.isotropic(m, rng).T
    crystal, pos, path = _first_interactions(
        p, np.ascontiguousarray(u), eng.cpe, eng.cco, eng.gb, eng.gt, fnb.seed_state(rng)
    )
    i, w = fnb._grid(fnb.PHOTON_MEV)
    mu = fnb._lookup(eng.cpe, i, w) + fnb._lookup(eng.cco, i, w)  # photoelectric + Compton
    # Walk every ray through all its boxes (numpy, box after box), summing their LYSO chords.
    lyso = np.zeros(m)
    tau = np.full(m, np.nan)  # LYSO depth of the first interaction
    t = np.zeros(m)
    act = np.arange(m)
    while act.size:
        t_in, t_out, box = next_box(g, p[:, act] + u[:, act] * t[act], u[:, act])
        met = box >= 0
        act, box = act[met], box[met]
        t_in, t_out = t[act] + np.maximum(t_in[met], 0.0), t[act] + t_out[met]
        here = crystal[act] == box  # the first interaction is in this box
        k = act[here]
        assert np.all(path[k] >= t_in[here] - 1e-9) and np.all(path[k] <= t_out[here] + 1e-9)
        tau[k] = lyso[k] + path[k] - t_in[here]
        lyso[act] += t_out - t_in
        t[act] = t_out + 1e-7
    hit = crystal >= 0
    assert not np.isnan(tau[hit]).any()  # every interaction lies in a box that the ray crosses
    np.testing.assert_allclose(pos[:, hit], p[:, hit] + u[:, hit] * path[hit], atol=1e-9)
    assert hit.sum() > 30_000 and (~hit).sum() > 10_000
    p_all = -np.expm1(-mu * lyso)
    expected, var = p_all.sum(), (p_all * (1 - p_all)).sum()
    assert abs(hit.sum() - expected) < 5 * math.sqrt(var), (hit.sum(), expected)
    f = -np.expm1(-mu * tau[hit]) / p_all[hit]
    assert stats.kstest(f, "uniform").pvalue > 1e-4


@pytest.mark.parametrize("start", ["inner_surface", "centre"])
def test_compiled_unscattered_fraction_through_the_wall_is_beer_lambert(start):
    # As tests/test_simulate_physics.py: no scatter followed, so survival is exp(-sum mu_i L_i).
    eng = _engine(_uniform_tube())
    rng = np.random.default_rng(11)
    n = 200_000
    r0 = 30.0 + 1e-6 if start == "inner_surface" else 0.0
    ph = eng.transport_phantom(radial_photons(n, r0, rng), rng)
    mu = {m: mat.cross_sections(m).mu(0.511) for m in ("Al", "Water", "Air")}
    expected = math.exp(-(20.0 * mu["Al"] + (30.0 - r0) * mu["Water"] + 1.0 * mu["Air"]))
    got = ph.alive.mean()
    assert abs(got - expected) < 4 * math.sqrt(expected * (1 - expected) / n), (got, expected)
    assert np.all(ph.energy[ph.alive] == 0.511)
    # Survivors end on the bounding cylinder (radius 51 mm), having flown straight out.
    assert np.allclose(np.hypot(ph.pos[ph.alive, 0], ph.pos[ph.alive, 1]), 51.0)
    assert np.allclose(ph.path[ph.alive], 51.0 - r0)


def test_compiled_slab_transmission_along_the_axis_is_beer_lambert():
    # Photons along z through 100 mm of water inside a straight tube: the exp(-mu L) law on a
    # path the classifier sees only through the tube's z extent (a slab of fluid).
    eng = _engine(_uniform_tube(length_mm=100.0))
    rng = np.random.default_rng(2)
    n = 200_000
    ph = radial_photons(n, 0.0, rng)
    ph.pos[:] = [0.0, 0.0, -50.0 + 1e-9]
    ph.dir[:] = [0.0, 0.0, 1.0]
    ph = eng.transport_phantom(ph, rng)
    mu_w, mu_air = mat.cross_sections("Water").mu(0.511), mat.cross_sections("Air").mu(0.511)
    expected = math.exp(-(100.0 * mu_w + 1.0 * mu_air))
    got = ph.alive.mean()
    assert abs(got - expected) < 4 * math.sqrt(expected * (1 - expected) / n), (got, expected)


def test_compiled_scattered_photons_lose_energy_and_are_flagged():
    eng = _engine(_uniform_tube(), max_scatter_orders=5, rayleigh=False)
    rng = np.random.default_rng(5)
    ph = eng.transport_phantom(radial_photons(50_000, 0.0, rng), rng)
    scat = ph.alive & (ph.scatters > 0)
    assert scat.sum() > 1000
    assert np.all(ph.energy[scat] < 0.511) and np.all(ph.energy[ph.alive & (ph.scatters == 0)] == 0.511)
    assert np.all(ph.energy[ph.alive] >= eng.e_cut)
    assert ph.scatters.max() <= 5


@pytest.mark.parametrize("energy", [0.511, 0.15])
def test_compiled_klein_nishina_angles_follow_the_analytic_distribution(energy):
    n = 200_000
    cos_t, e_out = fnb.sample_klein_nishina(np.full(n, energy), np.random.default_rng(42))
    edges = np.linspace(-1, 1, 41)
    counts, _ = np.histogram(cos_t, edges)
    pdf = lambda c: mat.klein_nishina_pdf_cos(c, energy)  # noqa: E731
    norm = integrate.quad(pdf, -1, 1)[0]
    expected = np.array([integrate.quad(pdf, a, b)[0] for a, b in zip(edges[:-1], edges[1:])]) / norm * n
    chi2 = np.sum((counts - expected) ** 2 / expected)
    assert stats.chi2.sf(chi2, len(counts) - 1) > 1e-3, chi2
    k = energy / mat.ELECTRON_MASS_MEV
    assert np.allclose(e_out, energy / (1 + k * (1 - cos_t)))


def test_compiled_small_angle_cosine_equals_libm():
    # The acollinearity's cos(sqrt(x2)): a Taylor series below 0.1 rad, libm above.
    x = np.concatenate([np.linspace(0.0, 0.1, 20_001), np.linspace(0.1, 3.0, 1001)])
    got = np.array([fnb._cos_of_root(v * v) for v in x])
    np.testing.assert_allclose(got, np.cos(x), rtol=0, atol=2.3e-16)


def test_compiled_acollinearity_and_positron_range():
    rng = np.random.default_rng(9)
    n = 50_000
    eng = _engine(_uniform_tube(a_mm=30.0, b_mm=20.0, wall_mm=3.0), acollinearity_fwhm_deg=0.5)
    _, ph = eng.emit(n, rng)
    dev = np.degrees(np.arccos(np.clip(-np.sum(ph.dir[:n] * ph.dir[n:], axis=1), -1, 1)))
    s = 0.5 / (2 * math.sqrt(2 * math.log(2)))
    assert np.median(dev) == pytest.approx(s * math.sqrt(2 * math.log(2)), rel=0.03)
    assert np.allclose(np.linalg.norm(ph.dir, axis=1), 1.0)
    # Isotropic first photon: <cos theta> = 0 and <cos^2 theta> = 1/3.
    assert abs(ph.dir[:n, 2].mean()) < 5 / math.sqrt(3 * n)
    assert (ph.dir[:n, 2] ** 2).mean() == pytest.approx(1 / 3, abs=5 * math.sqrt(4 / 45 / n))
    eng = _engine(_uniform_tube(a_mm=30.0, b_mm=20.0, wall_mm=3.0), phantom={"positron_range": True})
    src, ph = eng.emit(n, rng)
    shift = np.linalg.norm(ph.pos[:n] - src, axis=1)
    assert shift.mean() == pytest.approx(0.6, rel=0.02)
    assert np.all(np.abs((ph.pos[:n] - src).mean(axis=0)) < 5 * 0.6 / np.sqrt(n))
    # Decays are uniform in the fluid: every one is classified as fluid by the phantom.
    assert np.all(eng.tube.classify(src[:, 0], src[:, 1], src[:, 2]) == 1)


def test_compiled_sorter_gives_the_pairs_of_the_vectorised_one():
    rng = np.random.default_rng(0)
    n = 30_000
    t = np.sort(rng.uniform(0, 3e5, n))
    t[100:110] = t[100]  # ties
    crystal = rng.integers(0, 50, n).astype(np.int32)  # many same-crystal pairs
    energy = rng.uniform(0.35, 0.65, n).astype(np.float32)
    energy[200:260] = 0.5  # equal energy sums: take_winner keeps the first
    n_open = n - 500
    for policy in POLICIES:
        for start, exclusive in ((0.0, True), (100.0, False)):
            i, j = window_pairs(t, np.arange(n_open), start, 10.0, exclusive_start=exclusive)
            want = apply_policy(i, j, crystal, energy, policy)
            got = sorted_pairs(t, crystal, energy, n_open, start, 10.0, exclusive, policy)
            assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1]), (policy, start)
            assert got[0].size > 100


def test_stream_sorter_without_singles_gives_the_same_pairs():
    rng = np.random.default_rng(1)
    n = 20_000
    s = {
        "EventID": np.arange(n, dtype=np.int64) // 2,
        "GlobalTime": np.sort(rng.uniform(0, 2e5, n)),
        "TotalEnergyDeposit": rng.uniform(0.35, 0.65, n),
        "CrystalID": rng.integers(0, 500, n).astype(np.int32),
        "PhantomScatters": rng.integers(0, 2, n).astype(np.int16),
    }
    out = []
    for keep in (True, False):
        sorter = StreamSorter(10.0, "kill_all", 100.0, keep_singles=keep)
        res = [
            sorter.push({k: v[a : a + 5000] for k, v in s.items()}, s["GlobalTime"][a + 4999] - 1.0)
            for a in (0, 5000, 10000, 15000)
        ]
        res.append(sorter.push({k: v[:0] for k, v in s.items()}, None))
        out.append((res, sorter.stats))
    (ra, sa), (rb, sb) = out
    assert sa == sb and sa.singles == n
    for (sing_a, pa, da), (sing_b, pb, db) in zip(ra, rb):
        assert sing_b is None and sing_a["GlobalTime"].size >= 0
        assert all(np.array_equal(pa[k], pb[k]) for k in pa) and all(np.array_equal(da[k], db[k]) for k in da)


# ---- whole scans: compiled vs numpy reference ------------------------------------------------------


@pytest.fixture(scope="module")
def both_kernels(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kernels")
    return {k: fast_scan(tmp, k, seed) for k, seed in (("numba", 1), ("numpy", 2))}


def test_compiled_engine_counts_agree_with_the_numpy_reference(both_kernels):
    a, _ = both_kernels["numba"]
    b, _ = both_kernels["numpy"]
    assert_same_rates(a, b)
    assert a["prompts"] > 20_000 and a["randoms"] > 300


def test_compiled_engine_spectra_agree_with_the_numpy_reference(both_kernels):
    ra, rb = both_kernels["numba"][1], both_kernels["numpy"][1]
    sa = read_tree(ra, "Singles", ["TotalEnergyDeposit", "PhantomScatters", "CrystalID", "PostPosition_Z"])
    sb = read_tree(rb, "Singles", ["TotalEnergyDeposit", "PhantomScatters", "CrystalID", "PostPosition_Z"])
    assert two_sample_chi2(sa["TotalEnergyDeposit"], sb["TotalEnergyDeposit"], np.linspace(0.35, 0.65, 61)) > 1e-4
    # Energy spectrum of the scattered singles alone, and the scatter-order distribution.
    sel_a, sel_b = sa["PhantomScatters"] > 0, sb["PhantomScatters"] > 0
    assert (
        two_sample_chi2(sa["TotalEnergyDeposit"][sel_a], sb["TotalEnergyDeposit"][sel_b], np.linspace(0.35, 0.65, 31))
        > 1e-4
    )
    assert two_sample_chi2(sa["PhantomScatters"], sb["PhantomScatters"], np.arange(-0.5, 4.5)) > 1e-4
    # Where the singles land: rings (axial profile) and depth of interaction.
    assert two_sample_chi2(sa["PostPosition_Z"], sb["PostPosition_Z"], np.linspace(-128, 128, 33)) > 1e-4
    ca = read_tree(ra, "Coincidences", ["CrystalID1", "CrystalID2"])
    cb = read_tree(rb, "Coincidences", ["CrystalID1", "CrystalID2"])
    # Ring differences of the prompts (the axial acceptance the reconstruction sees).
    da = np.abs(ca["CrystalID1"] // 184 - ca["CrystalID2"] // 184)
    db = np.abs(cb["CrystalID1"] // 184 - cb["CrystalID2"] // 184)
    assert two_sample_chi2(da, db, np.arange(-0.5, 64.5, 4)) > 1e-4


def test_write_singles_false_keeps_the_coincidences_and_drops_the_singles(tmp_path):
    info_a, ra = fast_scan(tmp_path, "numba", 3, decays=60_000, write_singles=True)
    (tmp_path / "b").mkdir()
    info_b, rb = fast_scan(tmp_path / "b", "numba", 3, decays=60_000, write_singles=False)
    import uproot

    with uproot.open(rb) as f:
        assert "Singles" not in f and "Coincidences" in f and "Delayed" in f
    for tree in ("Coincidences", "Delayed"):
        ta, tb = read_tree(ra, tree), read_tree(rb, tree)
        assert list(ta) == list(tb)
        assert all(np.array_equal(ta[k], tb[k]) for k in ta), tree
    strip = lambda d: {k: v for k, v in d.items() if "second" not in k}  # noqa: E731
    assert json.dumps(strip(info_a)) == json.dumps(strip(info_b))
    assert rb.stat().st_size < 0.5 * ra.stat().st_size
    # The volume ids derived by the writer follow the scanner convention.
    c = read_tree(rb, "Coincidences", ["CrystalID1", "PreStepUniqueVolumeID1"])
    assert all(
        v == f"0_0_{cid // 184}_{cid % 184}" for v, cid in zip(c["PreStepUniqueVolumeID1"][:500], c["CrystalID1"][:500])
    )


def test_write_volume_ids_false_drops_only_the_string_branches(tmp_path):
    _, ra = fast_scan(tmp_path, "numba", 4, decays=40_000, write_singles=True)
    (tmp_path / "b").mkdir()
    _, rb = fast_scan(tmp_path / "b", "numba", 4, decays=40_000, write_singles=True, write_volume_ids=False)
    for tree in ("Singles", "Coincidences", "Delayed"):
        ta, tb = read_tree(ra, tree), read_tree(rb, tree)
        assert set(ta) - set(tb) == (
            {"PreStepUniqueVolumeID"} if tree == "Singles" else {"PreStepUniqueVolumeID1", "PreStepUniqueVolumeID2"}
        )
        assert all(np.array_equal(ta[k], tb[k]) for k in tb), tree
