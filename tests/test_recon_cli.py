"""`positrongan system-model` and `positrongan reconstruct` end to end on a tiny scanner, with
coincidences drawn from a known activity by a small ray-tracing generator written here."""

import numpy as np
import pytest
import uproot

from positrongan.cli import main
from positrongan.geometry.scanner import Scanner

SET = [
    "scanner.crystals_per_ring=64",
    "scanner.rings=4",
    "reconstruction.grid=16",
    "reconstruction.fov_mm=32.0",
    "reconstruction.doi_mm=0.0",
    "reconstruction.iterations=4",
    "reconstruction.subsets=2",
    "phantom.outer_semi_axes_mm=[12.0, 10.0]",  # the tube must fit the small field of view
    "phantom.bend_mm=[0.0, 1.0]",
    "device=cpu",
]
SCANNER = Scanner(crystals_per_ring=64, rings=4)


def synthetic_singles_rates(n_crystals, *crystal_ids):
    """A ``SinglesRates`` tree for hand-made ROOT files: four singles per coincidence end plus a
    floor, so that every crystal's prompts are a plausible fraction of its singles."""
    counts = 4 * np.bincount(np.concatenate(crystal_ids), minlength=n_crystals) + 50
    return {"CrystalID": np.arange(n_crystals, dtype=np.int32), "Counts": counts.astype(np.int64)}


def opts(extra=()):
    out = []
    for s in [*SET, *extra]:
        out += ["--set", s]
    return out


def truth_maps():
    """Activity: an off-centre disc of fluid in the middle planes; mu: water in it."""
    g = 16
    c = -16 + (np.arange(g) + 0.5) * 2
    x, y = np.meshgrid(c, c)
    disc = ((x - 3) ** 2 + (y + 2) ** 2) < 8**2
    act = np.zeros((SCANNER.n_planes, g, g), np.float32)
    act[1:-1] = disc
    mu = 0.0096 * act
    defects = np.zeros(act.shape, np.uint8)
    defects[3, 8, 9] = 4
    return act, mu.astype(np.float32), defects


def draw_coincidences(act, n, rng):
    """Emission points from the activity map, isotropic back-to-back photons, the crystals they hit."""
    p = act.ravel() / act.sum()
    idx = rng.choice(act.size, size=n, p=p)
    k, iy, ix = np.unravel_index(idx, act.shape)
    x = -16 + (ix + rng.random(n)) * 2
    y = -16 + (iy + rng.random(n)) * 2
    z = SCANNER.plane_z(k) + (rng.random(n) - 0.5) * 2
    phi = rng.uniform(0, np.pi, n)
    cos_t = rng.uniform(-0.15, 0.15, n)
    sin_t = np.sqrt(1 - cos_t**2)
    u = np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], axis=1)
    radius = SCANNER.inner_radius_mm
    pos = np.stack([x, y, z], axis=1)
    ids = []
    for sign in (1, -1):
        d = sign * u
        # |pos_xy + s d_xy| = radius, s > 0
        a = (d[:, :2] ** 2).sum(1)
        b = 2 * (pos[:, :2] * d[:, :2]).sum(1)
        cc = (pos[:, :2] ** 2).sum(1) - radius**2
        s = (-b + np.sqrt(b * b - 4 * a * cc)) / (2 * a)
        hit = pos + s[:, None] * d
        ids.append(SCANNER.locate(hit[:, 0], hit[:, 1], hit[:, 2]))
    c1, c2 = ids
    ok = (c1 >= 0) & (c2 >= 0)
    return c1[ok], c2[ok]


@pytest.fixture(scope="module")
def scan_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("scan")
    rng = np.random.default_rng(7)
    act, mu, defects = truth_maps()
    c1, c2 = draw_coincidences(act, 40000, rng)
    r1, r2 = rng.integers(0, SCANNER.n_crystals, (2, 500))
    with uproot.recreate(root / "scan_000.root") as fh:
        fh["Coincidences"] = {"CrystalID1": c1.astype(np.int32), "CrystalID2": c2.astype(np.int32)}
        fh["Delayed"] = {"CrystalID1": r1.astype(np.int32), "CrystalID2": r2.astype(np.int32)}
        # Singles per crystal (the randoms model needs them under kill_all): a few per prompt.
        fh["SinglesRates"] = synthetic_singles_rates(SCANNER.n_crystals, c1, c2, r1, r2)
    voxel = np.array([2.0, 2.0, 2.0])
    origin = np.array([SCANNER.plane_z(0), -15.0, -15.0])
    np.savez(root / "truth.npz", activity=act, mu=mu, defects=defects, voxel_mm=voxel, origin_mm=origin)
    return root, act


def test_reconstruct_writes_npz_png_and_a_readable_dicom_series(scan_files, tmp_path):
    import pydicom

    root, act = scan_files
    model = tmp_path / "model.npz"
    assert main(["system-model", *opts(), "--out", str(model)]) == 0
    out = tmp_path / "scan_000.npz"
    rc = main(
        [
            "reconstruct",
            *opts(),
            "--scan",
            "scan_000",
            "--root",
            str(root / "scan_000.root"),
            "--truth",
            str(root / "truth.npz"),
            "--system-model",
            str(model),
            "--out",
            str(out),
            "--png",
            str(tmp_path / "scan_000.png"),
            "--dicom",
            str(tmp_path / "scan_000_dicom"),
        ]
    )
    assert rc == 0
    z = np.load(out)
    img = z["image"]
    assert img.shape == act.shape
    assert z["loglik"].shape == (4,)
    assert z["sinogram"].sum() == z["prompts"] > 30000
    assert bool(z["attenuation_corrected"]) and bool(z["randoms_corrected"])
    assert str(z["algorithm"]) == "osem" and int(z["subsets"]) == 2
    np.testing.assert_allclose(z["voxel_mm"], [2.0, 2.0, 2.0])
    # The activity sits where the truth is: most of the image's total inside the true disc.
    inside = img[1:-1][act[1:-1] > 0].sum() / img[1:-1].sum()
    assert inside > 0.8
    assert (tmp_path / "scan_000.png").stat().st_size > 10000
    files = sorted((tmp_path / "scan_000_dicom").glob("*.dcm"))
    assert len(files) == SCANNER.n_planes
    for p in (0, 3):
        ds = pydicom.dcmread(files[p])
        assert ds.Modality == "PT" and ds.Rows == 16
        assert float(ds.ImagePositionPatient[2]) == pytest.approx(SCANNER.plane_z(p))
    # The series reloaded as a PET user reads it: Bq/mL, what was corrected, and how.
    series = [pydicom.dcmread(f) for f in files]
    assert len({ds.SeriesInstanceUID for ds in series}) == 1
    series.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    for ds in series:
        assert ds.Units == "BQML" and ds.DecayCorrection == "NONE"
        assert list(ds.CorrectedImage) == ["ATTN", "RAN"] and ds.RandomsCorrectionMethod == "DLYD"
        assert float(ds.RescaleIntercept) == 0
        assert float(ds.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose) == pytest.approx(4.0e6)
    volume = np.stack([ds.pixel_array * float(ds.RescaleSlope) for ds in series])
    bqml = img * float(z["bqml_per_unit"])
    assert str(z["units"]) == "BQML" and str(z["randoms_method"]) == "delayed"
    # Within 0.1 % of each plane's top value (16-bit per-slice scaling), and of every voxel above 1 %.
    top = bqml.max(axis=(1, 2), keepdims=True)
    assert np.abs(volume - bqml).max(initial=0) <= 1e-3 * bqml.max()
    assert (np.abs(volume - bqml) <= 1e-3 * np.maximum(bqml, 0.01 * top) + 1e-9).all()
    # The calibration: the image's total activity is the configured activity (Bq).
    voxel_ml = np.prod(z["voxel_mm"]) / 1000
    assert (z["image_unfiltered"] * float(z["bqml_per_unit"])).sum() * voxel_ml == pytest.approx(4.0e6, rel=1e-5)


def test_reconstruct_is_deterministic_and_builds_the_model_itself(scan_files, tmp_path):
    root, _ = scan_files
    args = ["--scan", "scan_000", "--root", str(root / "scan_000.root"), "--truth", str(root / "truth.npz")]
    assert main(["reconstruct", *opts(), *args, "--out", str(tmp_path / "a.npz")]) == 0
    assert main(["reconstruct", *opts(), *args, "--out", str(tmp_path / "b.npz")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "a.npz")["image"], np.load(tmp_path / "b.npz")["image"])


def errors(capsys):
    """The CLI's error lines (log lines share stderr)."""
    return [line for line in capsys.readouterr().err.splitlines() if "error:" in line]


def test_mismatched_model_and_bad_inputs_exit_with_one_line(scan_files, tmp_path, capsys):
    root, _ = scan_files
    model = tmp_path / "model.npz"
    assert main(["system-model", *opts(["reconstruction.grid=24"]), "--out", str(model)]) == 0
    base = [
        "reconstruct",
        *opts(),
        "--scan",
        "scan_000",
        "--truth",
        str(root / "truth.npz"),
        "--out",
        str(tmp_path / "x.npz"),
    ]
    capsys.readouterr()
    assert main([*base, "--root", str(root / "scan_000.root"), "--system-model", str(model)]) == 2
    err = errors(capsys)
    assert len(err) == 1 and str(model) in err[0]
    bad = tmp_path / "broken.root"
    bad.write_bytes(b"\x00" * 64)
    assert main([*base, "--root", str(bad)]) == 2
    err = errors(capsys)
    assert len(err) == 1 and str(bad) in err[0]
    assert not (tmp_path / "x.npz").exists()


def test_short_scan_twin_keeps_a_fraction_of_the_events_and_is_seeded(scan_files, tmp_path):
    root, _ = scan_files
    args = ["--scan", "scan_000", "--root", str(root / "scan_000.root"), "--truth", str(root / "truth.npz")]
    full, twin, again = (tmp_path / f"{n}.npz" for n in ("full", "twin", "again"))
    assert main(["reconstruct", *opts(), *args, "--out", str(full)]) == 0
    assert main(["reconstruct", *opts(), *args, "--fraction", "0.25", "--out", str(twin)]) == 0
    assert main(["reconstruct", *opts(), *args, "--fraction", "0.25", "--out", str(again)]) == 0
    f, t = np.load(full), np.load(twin)
    n = int(f["prompts"])
    # Binomial(n, 1/4) kept: within 5 sigma.
    assert abs(int(t["prompts"]) - n / 4) < 5 * np.sqrt(n * 0.25 * 0.75)
    assert abs(int(t["delayed"]) - int(f["delayed"]) / 4) < 5 * np.sqrt(int(f["delayed"]) * 0.25 * 0.75) + 1
    assert float(t["count_fraction"]) == 0.25 and float(f["count_fraction"]) == 1.0
    # A scan a quarter as long reconstructs to about a quarter of the activity.
    assert t["image"].sum() / f["image"].sum() == pytest.approx(0.25, rel=0.05)
    np.testing.assert_array_equal(t["image"], np.load(again)["image"])
    assert main(["reconstruct", *opts(), *args, "--fraction", "1.5", "--out", str(tmp_path / "bad.npz")]) == 2
    assert not (tmp_path / "bad.npz").exists()


@pytest.mark.parametrize("mode", ["2d", "3d"])
def test_a_twin_that_keeps_no_event_is_an_empty_image_not_an_error(scan_files, tmp_path, mode):
    root, _ = scan_files
    args = ["--scan", "scan_000", "--root", str(root / "scan_000.root"), "--truth", str(root / "truth.npz")]
    out = tmp_path / "twin.npz"
    rc = main(["reconstruct", *opts([f"reconstruction.mode={mode}"]), *args, "--fraction", "1e-9", "--out", str(out)])
    assert rc == 0
    z = np.load(out)
    assert int(z["prompts"]) == 0 and not z["image"].any() and np.isfinite(z["loglik"]).all()


def test_reconstruct_scores_every_defect_of_the_truth(scan_files, tmp_path):
    import json

    from positrongan.recon.detectability import from_json

    root, act = scan_files
    truth = dict(np.load(root / "truth.npz"))
    index = np.zeros(act.shape, np.uint8)
    index[3, 8, 9] = 1
    truth["defect_index"] = index
    truth["defect_list"] = np.array(json.dumps([{"type": "bubble", "size": {"radius_mm": 1.0}, "label": 4}]))
    np.savez(tmp_path / "truth.npz", **truth)
    out = tmp_path / "scan_000.npz"
    args = ["--scan", "scan_000", "--root", str(root / "scan_000.root"), "--truth", str(tmp_path / "truth.npz")]
    assert main(["reconstruct", *opts(["dataset.image_size=32"]), *args, "--out", str(out)]) == 0
    rows = from_json(np.load(out)["detectability"])
    assert len(rows) == 1 and rows[0]["type"] == "bubble" and rows[0]["defect_px"] > 0
