"""Randoms estimates (recon/randoms.py) against the true randoms counted from the truth: pairs
whose two singles come from different decays.

Two sources of truth: (1) a synthetic stream of decays (lone singles and detected pairs, with
crystal efficiencies that vary) sorted by the project's coincidence sorter, so the model is
checked alone at ~30 000 randoms; (2) a scan simulated by the fast engine, read back from its
ROOT file as the reconstruction reads it, with the estimate binned into the 3D sinogram."""

import json

import numpy as np
import pytest

from positrongan import config as configlib
from positrongan.coincidences import sorted_pairs
from positrongan.geometry.scanner import Scanner
from positrongan.recon.randoms import build_spec, pair_sinogram, policy_model, singles_counts

TAU_NS, OFFSET_NS = 10.0, 100.0


def synthetic_stream(seed, n_crystals=96, rate=2.5e6, seconds=0.5, pair_fraction=0.3):
    """Decays with one single (lone) or two (a detected pair) at ``rate`` decays
    per second; crystal efficiencies vary by 2x. Returns time-sorted (t ns, crystal, energy,
    decay id) and the seconds."""
    rng = np.random.default_rng(seed)
    n = rng.poisson(rate * seconds)
    t0 = np.sort(rng.uniform(0, seconds * 1e9, n))
    eff = rng.uniform(0.5, 1.0, n_crystals)
    p = eff / eff.sum()
    a = rng.choice(n_crystals, n, p=p)
    pair = rng.random(n) < pair_fraction
    b = (a[pair] + n_crystals // 2 + rng.integers(-8, 9, pair.sum())) % n_crystals
    # The pair's second single: the coincidence time resolution (~424 ps FWHM) apart, as simulated.
    t = np.concatenate([t0, t0[pair] + np.abs(rng.normal(0, 0.18, pair.sum()))])
    crystal = np.concatenate([a, b]).astype(np.int32)
    decay = np.concatenate([np.arange(n), np.flatnonzero(pair)])
    energy = rng.uniform(0.35, 0.65, t.size)
    order = np.argsort(t, kind="stable")
    return t[order], crystal[order], energy[order], decay[order], seconds


def sort(t, crystal, energy, policy):
    n = t.size
    prompts = sorted_pairs(t, crystal, energy, n, 0.0, TAU_NS, True, policy)
    delayed = sorted_pairs(t, crystal, energy, n, OFFSET_NS, TAU_NS, False, policy)
    return prompts, delayed


@pytest.mark.parametrize("policy", ["kill_all", "take_all_good", "take_winner"])
def test_both_estimates_match_the_true_randoms_of_a_synthetic_stream(policy):
    t, crystal, energy, decay, seconds = synthetic_stream(seed=11)
    (i, j), (di, dj) = sort(t, crystal, energy, policy)
    true_randoms = int((decay[i] != decay[j]).sum())
    assert true_randoms > 20_000  # 3 % is > 4 sigma of the truth's Poisson noise
    n = 96
    singles = np.bincount(crystal, minlength=n)
    prompts, delayed = (crystal[i], crystal[j]), (crystal[di], crystal[dj])
    args = (prompts, delayed, singles, TAU_NS, seconds, n, t[j] - t[i])
    delayed_est = build_spec("delayed", policy, *args).total_weight()
    u, w, k = build_spec("singles", policy, *args).factors
    singles_est = k * (u.sum() * w.sum() - (u * w).sum())  # every unordered pair i != j
    tol = 0.03 if policy != "take_winner" else 0.05  # take_winner's model is an approximation
    assert delayed_est == pytest.approx(true_randoms, rel=tol)
    assert singles_est == pytest.approx(true_randoms, rel=tol)
    raw = len(di) / true_randoms - 1
    if policy == "kill_all":
        # The uncorrected delayed window over-counts kill_all's randoms: the bias being fixed.
        assert raw > 0.1
    if policy == "take_all_good":
        assert abs(raw) < 0.03  # unbiased there, and left so (weight 1)
        assert build_spec("delayed", policy, *args).weights is None


@pytest.mark.parametrize("policy", ["kill_all", "take_all_good", "take_winner"])
def test_policy_model_recovers_the_pair_fraction_per_crystal(policy):
    # q_i = fraction of crystal i's singles that open a window holding their own partner.
    t, crystal, energy, decay, seconds = synthetic_stream(seed=12, n_crystals=48, rate=1e6, seconds=0.1)
    (i, j), _ = sort(t, crystal, energy, policy)
    n = 48
    m = policy_model(
        np.bincount(crystal, minlength=n),
        np.bincount(crystal[i], minlength=n),
        np.bincount(crystal[j], minlength=n),
        TAU_NS,
        seconds,
        policy,
    )
    # Truth: singles whose next single of the same decay comes after them.
    first = np.zeros(t.size, bool)
    _, idx = np.unique(decay, return_index=True)
    counts = np.bincount(decay)
    first[idx[counts[decay[idx]] == 2]] = True
    q_true = np.bincount(crystal[first], minlength=n) / np.bincount(crystal, minlength=n)
    assert np.abs(m.q - q_true).max() < 0.02
    # Decays with at least one single: ~1e6 / s.
    assert m.lam_per_s == pytest.approx(1e6, rel=0.02)


def test_pair_sinogram_is_the_sum_over_crystal_pairs():
    sc = Scanner(crystals_per_ring=8, rings=3)
    rng = np.random.default_rng(0)
    u, w = rng.random(sc.n_crystals), rng.random(sc.n_crystals)
    a, b = np.array([0, 1, 2]), np.array([4, 6, 5])
    est = pair_sinogram(u, w, 0.5, sc, a, b)
    for r1 in range(3):
        for r2 in range(3):
            for c in range(3):
                i, j = r1 * 8 + a[c], r2 * 8 + b[c]
                assert est[r1 * 3 + r2, c] == pytest.approx(0.5 * (u[i] * w[j] + u[j] * w[i]))


SIM = {
    "scanner": {"crystals_per_ring": 96, "rings": 8},
    "simulation": {"engine": "fast", "write_singles": True},
    "reconstruction": {"grid": 32, "fov_mm": 96.0, "mode": "3d", "doi_mm": 0.0},
    "phantom": {"activity_bq": 3.0e7, "acquisition_s": 0.1, "length_mm": 30.0},
}


@pytest.mark.parametrize("policy", ["kill_all", "take_all_good"])
def test_estimates_match_the_true_randoms_of_a_simulated_scan_in_the_3d_sinogram(tmp_path, policy):
    from positrongan.recon.driver import prompt_time_differences
    from positrongan.recon.lors import read_coincidences
    from positrongan.recon.osem3d import randoms_sinogram
    from positrongan.recon.projector3d import RingProjector3D
    from positrongan.rootfile import read_tree
    from positrongan.simulate.driver import simulate_scan

    data = json.loads(json.dumps(SIM))
    data["digitizer"] = {"multiples_policy": policy}
    cfg = configlib.validate(data)
    root = tmp_path / "scan.root"
    simulate_scan(cfg, "scan_000", root, tmp_path / "scan.json", None)
    sc = Scanner.from_config(cfg["scanner"])
    c1, c2 = read_coincidences(root, sc)
    delayed = read_coincidences(root, sc, "Delayed")
    ev = read_tree(root, "Coincidences", ["EventID1", "EventID2", "CrystalID1", "CrystalID2"])
    assert np.array_equal(ev["CrystalID1"], c1)  # no pair dropped: the EventIDs line up
    rec = cfg["reconstruction"]
    proj = RingProjector3D(sc, rec["fov_mm"], rec["grid"], rec["doi_mm"])
    random = ev["EventID1"] != ev["EventID2"]
    _, valid = proj.bin_events(c1[random], c2[random])
    true_in_sino = int(valid.sum())
    assert true_in_sino > 5000
    singles, source = singles_counts(root, sc)
    assert source in ("SinglesRates", "Singles")
    dig = cfg["digitizer"]
    dt = prompt_time_differences(root)
    raw = int(proj.bin_events(*delayed)[1].sum())
    for method in ("delayed", "singles"):
        spec = build_spec(
            method, policy, (c1, c2), delayed, singles, dig["coincidence_window_ns"], 0.1, sc.n_crystals, dt
        )
        est = float(randoms_sinogram(proj, spec).sum(dtype=np.float64))
        print(f"{policy} {method}: true {true_in_sino}, raw delayed {raw}, estimate {est:.2f}")
        assert est == pytest.approx(true_in_sino, rel=0.03), method
    if policy == "kill_all":
        assert raw > 1.05 * true_in_sino  # the bias the weights remove


def test_rebinned_singles_estimate_is_every_crystal_pair_rebinned():
    # randoms_2d bins R_ij of every crystal pair into the single-slice-rebinned sinogram; the
    # brute force: each unordered pair of crystals, weighted by R_ij, through lors.rebin.
    from positrongan.recon.driver import randoms_2d
    from positrongan.recon.lors import SinogramGeometry, rebin
    from positrongan.recon.randoms import RandomsSpec

    sc = Scanner(crystals_per_ring=16, rings=3)
    geom = SinogramGeometry.for_grid(sc, 20.0, 0.0)
    rng = np.random.default_rng(4)
    u, w = rng.random(sc.n_crystals), rng.random(sc.n_crystals)
    spec = RandomsSpec("singles", None, None, (u, w, 0.7), None, "kill_all")
    for maxrd in (None, 1):
        est = randoms_2d(spec, sc, geom, maxrd)
        i, j = np.triu_indices(sc.n_crystals, 1)
        brute, _ = rebin(i, j, sc, geom, maxrd, weights=0.7 * (u[i] * w[j] + u[j] * w[i]))
        np.testing.assert_allclose(est, brute, rtol=1e-5)


def test_missing_singles_give_one_clear_error_naming_the_key(tmp_path):
    import uproot

    from positrongan.errors import ArtifactError, ConfigError
    from positrongan.recon.driver import randoms_spec

    sc = Scanner(crystals_per_ring=16, rings=2)
    ids = np.arange(8, dtype=np.int32)
    root = tmp_path / "old.root"
    with uproot.recreate(root) as fh:
        fh["Coincidences"] = {"CrystalID1": ids, "CrystalID2": ids + 8}
        fh["Delayed"] = {"CrystalID1": ids, "CrystalID2": ids + 8}
    pairs = (ids.astype(np.int64), ids.astype(np.int64) + 8)
    rec = configlib.validate({})["reconstruction"]
    dig = {"coincidence_window_ns": 10.0, "multiples_policy": "kill_all"}
    for method in ("delayed", "singles"):
        with pytest.raises(ArtifactError, match=r"reconstruction\.randoms.*"):
            randoms_spec(root, sc, pairs, pairs, {**rec, "randoms": method}, dig, 1.0, 1.0)
    # take_all_good needs no singles for the delayed window (no correction).
    spec = randoms_spec(root, sc, pairs, pairs, rec, {**dig, "multiples_policy": "take_all_good"}, 1.0, 1.0)
    assert spec.weights is None and spec.total_weight() == 8
    with pytest.raises(ConfigError, match=r"reconstruction\.scatter_correction"):
        configlib.validate({"reconstruction": {"scatter_correction": True, "attenuation_correction": False}})
