"""Defect detectability with known answers: a perfect image recovers every contrast (CRC 1), a
noise-free blurred cold cylinder gives the CRC of the blurred-disc integral, pure noise gives
CNR near 0, and the pipeline summary (CSV + figure) lists every defect."""

import csv
import json

import numpy as np
import pytest
from scipy import stats

from positrongan.cli import main
from positrongan.recon.detectability import from_json, score_defects, section_polar, to_json, wall_search
from positrongan.report.detectability import (
    collect,
    format_found,
    format_median,
    in_target_population,
    median_ci95,
    summary,
)

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


def test_a_noise_free_crack_is_the_brightest_spot_of_the_wall_in_every_slice():
    act, mu, index, defects, _ = tube_with()
    (row,) = wall_search(act * 7.0, act, mu, index, defects)  # the blockage is cold: not searched
    assert row["type"] == "crack" and row["planes"] == PLANES
    assert row["found_length"] == 1.0 and row["found_slice"] == 1.0
    assert np.isnan(row["snr_length"])  # the null is flat: no noise, no SNR
    # The wall (20-24 px) is ~138 px round; the null keeps what lies 1.5 windows (4 px) clear
    # of the crack on each side: about 31 windows.
    assert 25 < row["null_windows"] < 35


def test_search_on_pure_noise_scores_near_zero_and_rarely_finds():
    act, mu, index, defects, _ = tube_with()
    rng = np.random.default_rng(11)
    rows = [wall_search(1.0 + 0.2 * rng.standard_normal(act.shape), act, mu, index, defects)[0] for _ in range(150)]
    snr = np.array([r["snr_length"] for r in rows])
    found = np.array([r["found_length"] for r in rows])
    # Mean 0; SD a little above 1: the wall's fitted trend (5 coefficients) takes part of the
    # null's ~31 independent windows, so its SD understates the noise (1.25 measured here).
    assert abs(snr.mean()) < 0.25 and 1.0 < snr.std() < 1.45
    # The crack's window beats every one of ~31 independent null windows by chance about 1 in 32
    # times (less, the null's maximum being over overlapping windows): 150 tries expect <= ~5.
    assert found.sum() <= 10


def test_search_snr_grows_with_the_crack_and_another_hot_defect_is_no_false_alarm():
    act, mu, index, defects, (x, y) = tube_with()
    # A pit, far brighter than the crack, on the wall at +y: a find of its own, not a null window.
    pit = (np.hypot(x, y - 22) < 2.5) & (index[0] == 0) & (mu[0] == MU_AL)
    index = np.where(pit[None], 3, index).astype(np.uint8)
    defects = defects + [{"type": "pit", "size": {"radius_mm": 2.5, "depth_fraction": 1.0}}]
    rng = np.random.default_rng(5)
    noise = 0.2 * rng.standard_normal(act.shape)
    slit = index == 2
    snrs = []
    for c in (0.0, 0.2, 0.5):
        image = 1.0 + noise + c * slit + 5.0 * (index == 3)
        crack = wall_search(image, act, mu, index, defects)[0]
        snrs.append(crack["snr_length"])
    assert snrs[0] < snrs[1] < snrs[2] and snrs[2] > 5.0
    assert crack["found_length"] == 1.0  # the brighter pit is excluded from the crack's null


def test_search_compares_a_defect_with_the_wall_around_it_not_with_the_far_side():
    # An eccentric lumen: the wall is 2.5 px thick at +x and 5.5 px at -x, where a faint crack
    # runs through it. Blurred without noise, the thin wall is brighter (more of it lies in the
    # fluid's roll-off) than the crack's thick wall; with the wall's slow trend round the section
    # taken away, the crack is still the brightest spot.
    from scipy import ndimage

    c = np.arange(G) - G / 2 + 0.5
    x, y = np.meshgrid(c, c)
    fluid = np.hypot(x - 1.5, y) < 20
    wall = (np.hypot(x, y) < 24) & ~fluid
    slit = wall & (x < 0) & (np.abs(y) <= 1.0)
    act = np.where(fluid, 1.0, 0.0) + np.where(slit, 1.0, 0.0)
    mu = np.where(fluid | slit, MU_WATER, 0.0) + np.where(wall & ~slit, MU_AL, 0.0)
    vol = lambda a: np.repeat(a[None].astype(np.float32), PLANES, axis=0)  # noqa: E731
    image = ndimage.gaussian_filter(np.where(fluid, 1.0, 0.0) + 0.3 * slit, 1.5)
    defects = [{"type": "crack", "size": {"width_mm": 2.0, "length_mm": 50.0}}]
    (row,) = wall_search(vol(image), vol(act), vol(mu), vol(slit).astype(np.uint8), defects)
    assert row["found_length"] == 1.0 and row["found_slice"] == 1.0 and row["snr_length"] > 3.0


def test_section_geometry_is_centred_on_the_tube_whatever_its_cold_defects():
    # A cold defect off the axis with neither activity nor mu leaves a hole in the section; it is
    # filled, so the centre stays the tube's and the wall's pixels keep their radii (20-24 px).
    act, mu, index, _, (x, y) = tube_with(cold_radius_px=8.0)
    phi, radius = section_polar(act[0], np.where(index[0] == 1, 0.0, mu[0]))
    wall = mu[0] == MU_AL
    assert np.allclose(radius, np.hypot(x, y), atol=0.05)
    assert 19.9 < radius[wall].min() and radius[wall].max() < 24.1
    assert np.allclose(np.cos(phi[wall]), (x / np.hypot(x, y))[wall], atol=1e-2)
    assert section_polar(np.zeros((G, G)), np.zeros((G, G))) is None


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
    # Found along the wall: counted over the target population that the search scored.
    rows[0]["search_found"], rows[1]["search_found"], rows[2]["search_found"] = 1.0, 0.0, float("nan")
    assert (summary(rows)["crack"]["searched"], summary(rows)["crack"]["found"]) == (2, 1)
    assert format_found(summary(rows)["crack"], "; ") == "; found along the wall: 1 of 2"
    assert format_found(summary(rows)["blockage"], "; ") == ""  # no type the search looks for


def test_detectability_command_writes_every_defect(tmp_path):
    act, mu, index, defects, _ = tube_with()
    paths = []
    for k, scan in enumerate(("scan_000", "scan_001")):
        rows = score_defects(act * (1 + 0.05 * k), act, mu, index, defects, search=True)
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
    # The wall search: cracks and pits only; a noise-free crack is found in every slice.
    assert table[0]["search_found"] == "" and table[1]["search_found"] == "1.0"
    assert table[1]["search_found_slices"] == "1.0" and table[1]["search_snr"] == ""
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
