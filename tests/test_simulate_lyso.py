"""The crystals' 176Lu background (simulation.lyso_background): its activity, beta spectrum and
cascade against known answers, its singles and coincidence rates, its interleaving with the source
(which it leaves unchanged), both kernels, the GATE scene's sources and the config rules."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
from scipy import stats
from scipy.integrate import quad

from positrongan import config as configlib
from positrongan.coincidences import StreamSorter
from positrongan.errors import ConfigError
from positrongan.geometry.scanner import Scanner
from positrongan.rootfile import read_tree
from positrongan.simulate import lyso
from positrongan.simulate.driver import draw_phantom, engine_parts, run_scan
from positrongan.simulate.settings import Acquisition, Digitizer

SMALL = {
    "seed": 5,
    "scans": {"count": 1},
    "scanner": {"crystals_per_ring": 32, "rings": 4, "crystal_pitch_mm": 12.0},
    "simulation": {"engine": "fast", "kernel": "numpy", "chunk_decays": 5000, "write_singles": True},
    "reconstruction": {"grid": 32, "fov_mm": 96.0},
    "phantom": {
        "activity_bq": 2.0e6,
        "acquisition_s": 0.004,
        "length_mm": 16.0,
        "outer_semi_axes_mm": [20.0, 15.0],
        "wall_thickness_mm": 3.0,
        "defects": {k: {"count": [0, 0]} for k in ("cracks", "pits", "blockages", "bubbles")},
    },
}


def _cfg(**over):
    data = json.loads(json.dumps(SMALL))
    for k, v in over.items():
        if isinstance(v, dict):
            data.setdefault(k, {}).update(v)
        else:
            data[k] = v
    return configlib.validate(data)


def _scan(tmp_path, name, cfg):
    root = tmp_path / f"{name}.root"
    info = run_scan(cfg, "scan_000", draw_phantom(cfg, "scan_000"), root)
    return info, read_tree(root, "Singles")


# ---- activity --------------------------------------------------------------------------------


def test_specific_activity_and_scanner_activity_from_the_lutetium_content():
    # By hand: Lu1.8Y0.2SiO5 with standard atomic weights, 2.599 % 176Lu, T1/2 = 3.76e10 y.
    m_lu, m_y, m_si, m_o = 174.967, 88.906, 28.085, 15.999
    w_lu = 1.8 * m_lu / (1.8 * m_lu + 0.2 * m_y + m_si + 5 * m_o)
    assert lyso.lutetium_mass_fraction("LYSO") == pytest.approx(w_lu, rel=1e-3)
    lam = math.log(2) / (3.76e10 * 365.25 * 86400)
    a_g = w_lu / m_lu * 6.02214076e23 * 0.02599 * lam
    assert lyso.specific_activity_bq_per_g("LYSO") == pytest.approx(a_g, rel=1e-3)
    assert a_g == pytest.approx(37.3, abs=0.1)
    # Per volume it is within the 250-300 Bq/cm^3 that LYSO/LSO background measurements report
    # (e.g. 0.27 Bq/mm^3 in opengate's intrinsic-activity example).
    assert 250 < a_g * 7.1 < 300
    assert lyso.lutetium_mass_fraction("BGO") == 0.0
    # The default scanner: 184 x 64 boxes of 20 x (2 R sin(pi / 184) 0.999) x (4 x 0.999) mm.
    sc = Scanner.from_config(configlib.validate({})["scanner"])
    r = 184 * 4.0 / (2 * math.pi)
    v_cm3 = 184 * 64 * 20.0 * (2 * r * math.sin(math.pi / 184) * 0.999) * (4.0 * 0.999) / 1000
    assert lyso.crystal_volume_cm3(sc) == pytest.approx(v_cm3, rel=1e-9)
    assert lyso.background_activity_bq(sc) == pytest.approx(v_cm3 * 7.1 * a_g, rel=1e-3)
    assert lyso.background_activity_bq(sc) == pytest.approx(0.997e6, rel=0.01)  # "about 1 MBq"
    assert lyso.background_activity_bq(sc, bq_per_g=10.0) == pytest.approx(v_cm3 * 7.1 * 10.0)
    # The config path: 0 when off, the scanner's activity when on.
    assert Acquisition.from_config(configlib.validate({})).lyso_activity_bq == 0.0
    on = configlib.validate({"simulation": {"lyso_background": True}})
    assert Acquisition.from_config(on).lyso_activity_bq == pytest.approx(lyso.background_activity_bq(sc))


# ---- decay scheme ----------------------------------------------------------------------------


def test_beta_spectrum_samples_follow_the_analytic_shape_and_the_tabulated_mean():
    sampler = lyso.BetaSampler()
    x = sampler.sample(200_000, np.random.default_rng(1))
    assert x.min() >= 0 and x.max() <= lyso.BETA_ENDPOINT_MEV
    # Chi-square of the sample against the analytic spectrum integrated over 40 bins.
    edges = np.linspace(0, lyso.BETA_ENDPOINT_MEV, 41)
    fine = np.linspace(0, lyso.BETA_ENDPOINT_MEV, 40 * 200 + 1)
    pdf = sampler.pdf(fine)
    cell = np.add.reduceat(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(fine), np.arange(0, 40 * 200, 200))
    observed, _ = np.histogram(x, edges)
    expected = cell / cell.sum() * x.size
    chi2 = ((observed - expected) ** 2 / expected).sum()
    assert stats.chi2.sf(chi2, 39) > 1e-3, chi2
    # The normalised pdf integrates to 1; the mean beta energy of the main branch is 182 keV
    # (ENSDF; Alva-Sanchez et al. 2018): the allowed shape x Fermi function is within 1.5 %.
    assert quad(sampler.pdf, 0, lyso.BETA_ENDPOINT_MEV, limit=200)[0] == pytest.approx(1.0, rel=1e-7)
    mean = quad(lambda t: t * sampler.pdf(t), 0, lyso.BETA_ENDPOINT_MEV, limit=200)[0]
    assert mean == pytest.approx(0.182, rel=0.015)
    assert x.mean() == pytest.approx(mean, abs=5 * x.std() / math.sqrt(x.size))
    # The Coulomb attraction of the daughter (Z = 72) enhances the slow end: the spectrum at
    # 10 keV exceeds the bare phase-space shape p W (T0 - T)^2 scaled to agree at 400 keV.
    me = 0.51099895

    def phase_space(t):
        w = 1 + t / me
        return np.sqrt(w * w - 1) * w * (lyso.BETA_ENDPOINT_MEV - t) ** 2

    ratio = lambda t: lyso.beta_spectrum(t) / phase_space(t)  # noqa: E731
    assert ratio(0.01) > 1.5 * ratio(0.4)


def test_cascade_lines_intensities_and_local_energy():
    sc = Scanner.from_config(_cfg()["scanner"])
    bg = lyso.LysoBackground(sc, Digitizer.from_config(_cfg()["digitizer"]), 1.0, 1.0, 1000)
    n = 200_000
    cid, src, beta, emitted = bg.sample_decays(n, np.random.default_rng(2))
    np.testing.assert_allclose(lyso.GAMMA_MEV, [0.30678, 0.20183, 0.08834])
    for k, p in enumerate((0.936, 0.780, 0.145)):
        assert abs(emitted[k].mean() - p) <= 5 * math.sqrt(p * (1 - p) / n), k
    # Energy: beta + the 596.8 keV level = what deposits locally + the gammas that leave.
    local = beta + lyso.local_conversion_mev(emitted)
    carried = (lyso.GAMMA_MEV[:, None] * emitted).sum(axis=0)
    np.testing.assert_allclose(local + carried, beta + lyso.GAMMA_MEV.sum(), rtol=1e-12)
    # Decay points: every crystal alike, each point inside its own box.
    counts = np.bincount(cid, minlength=sc.n_crystals)
    assert stats.chisquare(counts).pvalue > 1e-3
    g = bg.boxes
    phi = 2 * np.pi * (cid % g.n) / g.n
    radial = src[0] * np.cos(phi) + src[1] * np.sin(phi)
    tangential = src[1] * np.cos(phi) - src[0] * np.sin(phi)
    axial = src[2] - ((cid // g.n) - (g.rings - 1) / 2) * g.pitch
    assert np.all((radial >= g.r_in) & (radial <= g.r_in + g.depth))
    assert np.all(np.abs(tangential) <= g.half_w) and np.all(np.abs(axial) <= g.half_h)
    # Uniform in depth: the radial coordinate's mean is mid-depth.
    assert radial.mean() == pytest.approx(g.r_in + g.depth / 2, abs=5 * g.depth / math.sqrt(12 * n))


def test_every_decay_reads_out_in_its_own_crystal_with_its_local_energy():
    # An open window and no blur: each decay gives exactly one single in the crystal it is born in,
    # holding at least its local energy (beta + conversions, plus any gamma absorbed there), and the
    # energy of all singles never exceeds what the decays released.
    sc = Scanner.from_config(_cfg()["scanner"])
    dig = Digitizer(1e-12, 0.511, 1e-6, (0.0, 1e6), 10.0, "take_all_good", False, 20.0)
    bg = lyso.LysoBackground(sc, dig, 1.0, 1.0, 1000)
    n = 3000
    times = np.sort(np.random.default_rng(3).random(n)) * 1e6
    singles = bg.simulate_chunk(times, 0, np.random.default_rng(4))
    # The same draws again, to know each decay's origin and local energy.
    cid, _, beta, emitted = bg.sample_decays(n, np.random.default_rng(4))
    local = beta + lyso.local_conversion_mev(emitted)
    decay = -singles["EventID"] - 1
    assert np.array_equal(np.unique(decay), np.arange(n))
    own = singles["CrystalID"] == cid[decay]
    assert np.bincount(decay[own], minlength=n).tolist() == [1] * n
    e = singles["TotalEnergyDeposit"]
    assert np.all(e[own] >= local[decay[own]] - 1e-9)
    assert e.sum() <= (beta + lyso.GAMMA_MEV.sum()).sum() + 1e-6
    # Gammas reach other crystals: beta-gamma pairs are what makes background coincidences.
    assert (~own).sum() > 0.05 * n
    # Singles elsewhere that absorbed one whole line sit exactly at its energy (no blur).
    far = e[~own]
    for line in lyso.GAMMA_MEV[:2]:
        assert np.isclose(far, line, atol=1e-9).sum() > 0.01 * n
    assert bg.decays == n


# ---- whole scans -----------------------------------------------------------------------------


def test_background_only_scan_counts_decays_singles_and_randoms_at_the_expected_rates(tmp_path):
    # No source to speak of (1 mBq x 8 ms): every single is a background one. The activity is raised
    # (lyso_bq_per_g) so 8 ms give ~4e4 decays and enough randoms; take_all_good keeps every pair,
    # so the delayed window holds N^2 tau / T pairs (less the same-crystal ones).
    cfg = _cfg(
        phantom={"activity_bq": 1e-3, "acquisition_s": 0.008},
        simulation={"lyso_background": True, "lyso_bq_per_g": 6000.0},
        digitizer={"multiples_policy": "take_all_good"},
    )
    activity = Acquisition.from_config(cfg).lyso_activity_bq
    info, singles = _scan(tmp_path, "bg", cfg)
    assert info["decays"] == 0
    expected = activity * 0.008
    assert abs(info["lyso_decays"] - expected) <= 5 * math.sqrt(expected)
    assert info["lyso_singles"] == info["singles"] == singles["EventID"].size
    assert np.all(singles["EventID"] < 0)
    # About half the decays leave a single in the 350-650 keV window (beta + cascade sums).
    eff = info["singles"] / info["lyso_decays"]
    assert 0.3 < eff < 0.8, eff
    n, t_ns, tau = info["singles"], 0.008e9, cfg["digitizer"]["coincidence_window_ns"]
    per_crystal = np.bincount(singles["CrystalID"], minlength=128)
    same = (per_crystal.astype(float) ** 2).sum() / n**2
    randoms = n * n * tau / t_ns * (1 - same)
    assert abs(info["delayed"] - randoms) <= 5 * math.sqrt(randoms), (info["delayed"], randoms)
    assert abs(info["randoms"] - randoms) <= 5 * math.sqrt(randoms), (info["randoms"], randoms)
    assert info["lyso_delayed"] == info["delayed"] and info["lyso_prompts"] == info["prompts"]
    assert info["prompts"] == info["randoms"] + info["lyso_trues"] and info["trues"] == info["scatters"] == 0
    # Beta-gamma pairs of one decay: a gamma must escape its crystal, be absorbed in another and pass
    # the window (307 keV only through the blur): a small fraction of the decays.
    assert 0 < info["lyso_trues"] < 0.05 * info["lyso_decays"]


def test_background_leaves_the_source_singles_unchanged_and_both_kernels_agree(tmp_path):
    off, s_off = _scan(tmp_path, "off", _cfg())
    assert "lyso_decays" not in off
    on_cfg = _cfg(simulation={"lyso_background": True})
    on, s_on = _scan(tmp_path, "on", on_cfg)
    src = s_on["EventID"] >= 0
    o1 = np.argsort(s_on["GlobalTime"][src], kind="stable")
    o2 = np.argsort(s_off["GlobalTime"], kind="stable")
    for k in s_off:
        assert np.array_equal(np.asarray(s_on[k])[src][o1], np.asarray(s_off[k])[o2]), k
    assert on["decays"] == off["decays"] and on["singles"] == off["singles"] + on["lyso_singles"]
    assert on["lyso_singles"] > 0
    # The singles file is time-ordered across the interleaved streams.
    assert np.all(np.diff(s_on["GlobalTime"]) >= 0)
    # The numba kernel shares the background code and its stream: the same background singles.
    nb, s_nb = _scan(tmp_path, "numba", _cfg(simulation={"lyso_background": True, "kernel": "numba"}))
    assert nb["lyso_decays"] == on["lyso_decays"]
    bg_np, bg_nb = s_on["EventID"] < 0, s_nb["EventID"] < 0
    for k in ("EventID", "GlobalTime", "CrystalID", "SourcePosition_X"):
        a, b = np.asarray(s_on[k])[bg_np], np.asarray(s_nb[k])[bg_nb]
        assert np.array_equal(np.sort(a), np.sort(b)), k
    np.testing.assert_allclose(
        np.sort(s_on["TotalEnergyDeposit"][bg_np]), np.sort(s_nb["TotalEnergyDeposit"][bg_nb]), rtol=1e-6
    )


def test_sorter_counts_background_pairs_apart_from_source_trues():
    # Hand-made singles: a source pair (event 0), a background pair (event -1), a source-background
    # random (events 1 and -2), far apart in time.
    sorter = StreamSorter(10.0, "take_all_good", 100.0, n_crystals=8)
    singles = {
        "EventID": np.array([0, 0, -1, -1, 1, -2]),
        "GlobalTime": np.array([0.0, 1.0, 1000.0, 1001.0, 2000.0, 2002.0]),
        "CrystalID": np.array([0, 4, 1, 5, 2, 6], np.int32),
        "TotalEnergyDeposit": np.full(6, 0.5),
        "PhantomScatters": np.zeros(6, np.int16),
    }
    sorter.push(singles, known_until=None)
    s = sorter.stats
    assert (s.singles, s.prompts, s.trues, s.scatters, s.randoms) == (6, 3, 1, 0, 1)
    assert (s.background_singles, s.background_prompts, s.background_trues) == (3, 2, 1)


# ---- GATE scene and config -------------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("opengate") is None, reason="opengate is not installed")
def test_gate_scene_has_confined_lu176_sources_with_the_background_activity(tmp_path):
    from positrongan.config import derived_seed
    from positrongan.simulate import gate

    cfg = _cfg(simulation={"lyso_background": True})
    parts = engine_parts(cfg, draw_phantom(cfg, "scan_000"))
    sc, acq = parts[1], parts[3]
    sim, _, _ = gate.build_simulation(
        *parts,
        derived_seed(cfg, "gate", "scan_000"),
        tmp_path,
        require_data=False,
    )
    import opengate as og

    u = og.g4_units
    names = [n for n in sim.source_manager.sources if n.startswith(gate.LYSO_SOURCE_PREFIX)]
    assert len(names) == sc.crystals_per_ring
    total = 0.0
    depth, width, _ = lyso.crystal_box_mm(sc)
    for i in range(sc.crystals_per_ring):
        src = sim.source_manager.get_source(f"{gate.LYSO_SOURCE_PREFIX}{i}")
        assert src.particle == "ion 71 176" and src.ion.Z == 71 and src.ion.A == 176
        assert src.position.confine == sim.volume_manager.get_volume("crystal").get_repetition_name_from_index(i)
        assert src.position.type == "box"
        assert src.position.size == pytest.approx([depth * u.mm, width * u.mm, sc.axial_length_mm * u.mm])
        phi = 2 * math.pi * i / sc.crystals_per_ring
        r_mid = (sc.inner_radius_mm + depth / 2) * u.mm
        assert src.position.translation == pytest.approx([r_mid * math.cos(phi), r_mid * math.sin(phi), 0], abs=1e-9)
        # Decays at the event time, not ~1e10 years later.
        assert src.user_particle_life_time == 0
        total += src.activity
    assert total == pytest.approx(acq.lyso_activity_bq * u.Bq)
    assert sim.physics_manager.enable_decay
    # Off: no ion source, decay stays off.
    sim2, _, _ = gate.build_simulation(
        *engine_parts(_cfg(), parts[0], sc),
        1,
        tmp_path / "off",
        require_data=False,
    )
    assert not any(n.startswith(gate.LYSO_SOURCE_PREFIX) for n in sim2.source_manager.sources)
    assert not sim2.physics_manager.enable_decay


def test_gate_output_marks_the_decays_born_in_the_crystals_as_background():
    from positrongan.simulate.gate import mark_background_events

    sc = Scanner.from_config(_cfg()["scanner"])
    r_in = sc.inner_radius_mm
    event = np.array([0, 1, 2, 2, 3])
    x = np.array([0.0, 10.0, r_in + 5.0, r_in + 5.0, -(r_in + 19.0)])
    y = np.array([0.0, -20.0, 0.0, 0.0, 0.0])
    out = mark_background_events(event, x, y, sc)
    assert out.tolist() == [0, 1, -3, -3, -4]


def test_config_refuses_a_background_without_lutetium_or_per_crystal_readout():
    with pytest.raises(ConfigError, match="simulation.lyso_background.*crystal_material"):
        configlib.validate({"simulation": {"lyso_background": True}, "scanner": {"crystal_material": "BGO"}})
    with pytest.raises(ConfigError, match="digitizer.readout"):
        configlib.validate(
            {"simulation": {"lyso_background": True, "engine": "fast"}, "digitizer": {"readout": "annulus"}}
        )
    with pytest.raises(ConfigError, match="lyso_bq_per_g"):
        configlib.validate({"simulation": {"lyso_bq_per_g": 0}})
    configlib.validate({"simulation": {"lyso_background": True}, "scanner": {"crystal_material": "LSO"}})
