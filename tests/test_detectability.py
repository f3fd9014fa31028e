"""Defect detectability with known answers: a perfect image recovers every contrast (CRC 1), a
noise-free blurred cold cylinder gives the CRC of the blurred-disc integral, pure noise gives
CNR near 0, and the pipeline summary (CSV + figure) lists every defect."""

import csv
import json

import numpy as np
import pytest
from scipy import stats

from positrongan.cli import main
from positrongan.recon.detectability import from_json, score_defects, to_json
from positrongan.report.detectability import collect, format_median, in_target_population, median_ci95, summary

G, PLANES = 64, 6
MU_WATER, MU_AL = 0.0096, 0.0226


def tube_with(cold_radius_px=6.0, crack=True):
    """A fluid disc (radius 20 px) in an Al wall ring (20-24 px); a cold cylinder through every
    plane at (x, y) = (+6, 0) px from the centre, and a 2 px crack through the wall at -x."""
    c = np.arange(G) - G / 2 + 0.5
    x, y = np.meshgrid(c, c)
    r = np.hypot(x, y)
    fluid = r < 20
    wall = (r >= 20) & (r < 24)
    cold = np.hypot(x - 6, y) < cold_radius_px
    slit = wall & (x < 0) & (np.abs(y) <= 1.0)
    act = np.where(fluid & ~cold, 1.0, 0.0) + np.where(slit, 1.0, 0.0) * crack
    mu = (
        np.where(fluid, MU_WATER, 0.0)
        + np.where(wall & ~(slit & crack), MU_AL, 0.0)
        + np.where(slit & crack, MU_WATER, 0)
    )
    index = np.where(cold, 1, 0) + np.where(slit & crack, 2, 0)
    vol = lambda a: np.repeat(a[None].astype(np.float32), PLANES, axis=0)  # noqa: E731
    defects = [{"type": "blockage", "size": {"radius_mm": cold_radius_px, "length_mm": 50.0}}]
    if crack:
        defects.append({"type": "crack", "size": {"width_mm": 2.0, "length_mm": 50.0, "wall_mm": 4.0}})
    return vol(act), vol(mu), vol(index).astype(np.uint8), defects, (x, y)


def test_a_perfect_image_recovers_every_contrast():
    act, mu, index, defects, _ = tube_with()
    rows = score_defects(act * 7.0, act, mu, index, defects)
    assert [r["type"] for r in rows] == ["blockage", "crack"]
    assert np.isnan(rows[0]["wall_mm"]) and rows[1]["wall_mm"] == 4.0  # the wall beside a crack, from its size
    for r in rows:
        assert r["crc"] == pytest.approx(1.0, abs=1e-9)
        assert r["defect_px"] > 0 and r["fluid_px"] >= 8 and r["reference_px"] >= 8
        assert np.isnan(r["cnr"])  # no noise at all: CNR is undefined, not infinite


def test_noise_free_blurred_cold_cylinder_has_the_blurred_disc_crc():
    # A noise-free reconstruction with a Gaussian resolution sigma: at a pixel r from the axis of
    # a cold cylinder of radius R, the image is 1 - P(|r + N(0, sigma^2 I)| < R), a noncentral
    # chi-square CDF. The expected CRC averages that closed form over the same regions.
    R, sigma = 6.0, 1.7
    act, mu, index, defects, (x, y) = tube_with(cold_radius_px=R, crack=False)
    rc = np.hypot(x - 6, y)
    inside = stats.ncx2.cdf((R / sigma) ** 2, 2, (rc / sigma) ** 2)
    fluid_disc = np.hypot(x, y) < 20
    image = np.where(fluid_disc, 1.0 - inside, 0.0)
    rows = score_defects(np.repeat(image[None], PLANES, axis=0), act, mu, index, defects)
    from scipy import ndimage

    d = index[0] == 1
    # The documented background: fluid within 6 px of the defect, 2 px clear of any non-fluid pixel.
    core = ndimage.binary_erosion((act[0] >= 0.95) & ~d, structure=np.hypot(*np.mgrid[-2:3, -2:3]) <= 2)
    ring = core & ndimage.binary_dilation(d, structure=np.hypot(*np.mgrid[-6:7, -6:7]) <= 6)
    expected = (image[ring].mean() - image[d].mean()) / image[ring].mean()
    assert rows[0]["crc"] == pytest.approx(expected, rel=1e-6)
    # And that value is what resolution does to a 6 px cylinder at sigma 1.7 px: clearly < 1.
    assert 0.55 < rows[0]["crc"] < 0.9


def test_pure_noise_gives_cnr_near_zero():
    act, mu, index, defects, _ = tube_with()
    rng = np.random.default_rng(3)
    cnrs = []
    for _ in range(20):
        noise = 1.0 + 0.2 * rng.standard_normal(act.shape)
        rows = score_defects(noise, act, mu, index, defects)
        cnrs += [r["cnr"] for r in rows]
    cnrs = np.array(cnrs)
    # CNR of pure noise ~ N(0, 1/N_D + 1/N_ref): a few hundred pixels each, so |mean| << 0.2.
    assert abs(cnrs.mean()) < 0.1
    assert np.abs(cnrs).max() < 0.5


def test_signal_raises_cnr_in_proportion_to_contrast_over_noise():
    act, mu, index, defects, _ = tube_with(crack=False)
    rng = np.random.default_rng(4)
    noise = 0.1 * rng.standard_normal(act.shape)
    rows = score_defects(act + noise, act, mu, index, defects)
    # Contrast 1 against a pixel noise of 0.1: CNR ~ 10.
    assert rows[0]["cnr"] == pytest.approx(10.0, rel=0.1)
    assert rows[0]["crc"] == pytest.approx(1.0, abs=0.02)


def test_scores_at_the_dataset_scale_and_slab():
    act, mu, index, defects, _ = tube_with()
    rows = score_defects(act, act, mu, index, defects, image_size=32, slice_planes=3)
    assert rows[0]["defect_px"] < int((index == 1).sum())  # counted on 32 px slices
    assert rows[0]["crc"] == pytest.approx(1.0, abs=0.05)


def test_an_unresolved_defect_scores_nan_not_a_number_made_up():
    act, mu, index, defects, _ = tube_with(crack=False)
    index = np.zeros_like(index)
    rows = score_defects(act, act, mu, index, defects)
    assert np.isnan(rows[0]["crc"]) and np.isnan(rows[0]["cnr"]) and rows[0]["defect_px"] == 0


def test_rows_round_trip_through_the_recon_npz_json():
    rows = [{"defect": 0, "type": "pit", "crc": float("nan"), "cnr": 1.5}]
    back = from_json(to_json(rows))
    assert np.isnan(back[0]["crc"]) and back[0]["cnr"] == 1.5 and back[0]["type"] == "pit"


def test_target_population_follows_the_stated_sizes():
    assert in_target_population({"type": "blockage", "size_mm": 4.0, "depth_fraction": np.nan})
    assert not in_target_population({"type": "bubble", "size_mm": 3.9, "depth_fraction": np.nan})
    assert in_target_population({"type": "crack", "size_mm": 1.5, "depth_fraction": np.nan})
    assert not in_target_population({"type": "pit", "size_mm": 3.0, "depth_fraction": 0.5})
    s = summary([{"type": "pit", "size_mm": 3.0, "depth_fraction": 0.7, "cnr": 2.0, "crc": 0.5}])
    assert s["pit"]["n_target"] == 1 and s["pit"]["median_cnr"] == 2.0 and s["crack"]["n"] == 0


def test_median_interval_is_the_sign_test_pair_of_order_statistics():
    # N = 10: P(Binomial(10, 1/2) <= 1) = 11/1024 per side, so the 95 % pair is the 2nd smallest and
    # the 2nd largest (the 3rd and 8th would cover only 89 %).
    x = np.array([2.5, 0.45, 3.3, 1.92, 2.77, 1.81, 2.2, 3.17, 2.98, 2.12])
    assert median_ci95(x) == (1.81, 3.17)
    assert median_ci95(x[:6]) == (0.45, 3.3)  # N = 6: min to max covers 1 - 2/64 = 97 %
    assert all(np.isnan(median_ci95(x[:5])))  # N = 5: min to max covers only 94 %
    assert all(np.isnan(median_ci95([])))


def test_median_interval_covers_the_true_median_at_least_95_percent():
    rng = np.random.default_rng(0)
    hits = [lo <= 1.0 <= hi for lo, hi in (median_ci95(rng.lognormal(0.0, 1.0, 20)) for _ in range(2000))]
    # exact binomial pair at N = 20: 1 - 2 P(B <= 5) = 95.9 %; 2000 draws give +-0.9 % (2 sigma)
    assert 0.945 <= np.mean(hits) <= 0.975


def test_summary_gives_the_median_interval_or_says_there_is_none():
    rows = [{"type": "crack", "size_mm": 2.0, "depth_fraction": np.nan, "cnr": c, "crc": 0.1} for c in range(1, 8)]
    s = summary(rows)["crack"]
    assert s["n_target"] == 7 and s["cnr_ci95"] == (1.0, 7.0)
    assert format_median(s) == "median 4.00, 95 % CI [1.00, 7.00]"
    assert format_median(summary(rows[:4])["crack"]) == "median 2.50, no 95 % CI at N < 6"
    assert format_median(summary([])["crack"]) == "no defect"


def test_detectability_command_writes_every_defect(tmp_path):
    act, mu, index, defects, _ = tube_with()
    paths = []
    for k, scan in enumerate(("scan_000", "scan_001")):
        rows = score_defects(act * (1 + 0.05 * k), act, mu, index, defects)
        p = tmp_path / f"{scan}.npz"
        np.savez(p, scan=np.array(scan), detectability=to_json(rows))
        paths.append(str(p))
    out, png = tmp_path / "detectability.csv", tmp_path / "detectability.png"
    assert main(["detectability", "--recon", *paths, "--csv", str(out), "--png", str(png)]) == 0
    with open(out) as fh:
        table = list(csv.DictReader(fh))
    assert [(r["scan"], r["type"]) for r in table] == [
        ("scan_000", "blockage"),
        ("scan_000", "crack"),
        ("scan_001", "blockage"),
        ("scan_001", "crack"),
    ]
    assert float(table[0]["crc"]) == pytest.approx(1.0) and table[0]["cnr"] == ""
    assert png.stat().st_size > 10_000
    json.dumps(table)  # plain strings: any spreadsheet opens it


def test_pooled_runs_name_each_scan_with_its_results_folder(tmp_path):
    act, mu, index, defects, _ = tube_with()
    rows = to_json(score_defects(act, act, mu, index, defects))
    paths = []
    for run in ("results", "results_s1"):
        (tmp_path / run / "recon").mkdir(parents=True)
        p = tmp_path / run / "recon" / "scan_000.npz"
        np.savez(p, scan=np.array("scan_000"), detectability=rows)
        paths.append(p)
    assert {r["scan"] for r in collect(paths)} == {"results/scan_000", "results_s1/scan_000"}
    assert {r["scan"] for r in collect(paths[:1])} == {"scan_000"}  # one run: the plain ids
