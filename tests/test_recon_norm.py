"""Component normalisation (recon/normalisation.py): the estimator recovers imposed factors, the
factors land on the right LORs of the 3D sinogram and the 2D planes, and a uniform cylinder
simulated with the fast engine reconstructs flat with them (and not without)."""

import numpy as np
import pytest
import torch

from positrongan import config as configlib
from positrongan.errors import ArtifactError
from positrongan.geometry.scanner import Scanner
from positrongan.recon.norm_source import ActivityCylinder, build_normalisation, simulate_trues
from positrongan.recon.normalisation import (
    estimate_components,
    factors_2d,
    load_normalisation,
    lor_factors_3d,
    model_counts,
    radial_profile,
    ring_pair_counts,
    save_normalisation,
)
from positrongan.recon.projector3d import RingProjector3D, fov_geometry

SMALL = Scanner(crystals_per_ring=96, rings=8)


def imposed(rings, bins, rng):
    """A radial factor with a cusp and an even/odd pattern, and an axial factor with the scanner's
    ring-pair symmetries (what the simulated detector shows, exaggerated)."""
    x = np.linspace(-1, 1, bins)
    g = 0.9 + 0.15 * np.abs(x) + 0.02 * (np.arange(bins) % 2)
    h = rng.uniform(0.8, 1.2, (rings, rings))
    h = (h + h.T + h[::-1, ::-1] + h.T[::-1, ::-1]) / 4
    return g, h


def test_estimate_recovers_imposed_factors_exactly_from_expected_counts():
    geom = fov_geometry(SMALL, 96.0, 7.0)
    model = model_counts(SMALL, geom, 56.0)
    g, h = imposed(SMALL.rings, geom.n_bins, np.random.default_rng(0))
    est = estimate_components(1e3 * g[None, None, :] * h[:, :, None] * model, model)
    # The factors are defined up to one constant, fixed by sum(g h m) = sum(m).
    scale = model.sum() / (g[None, None, :] * h[:, :, None] * model).sum()
    assert np.allclose(est["radial"] * est["axial"][0, 0], g * h[0, 0] * scale, rtol=1e-9)
    assert np.allclose(est["radial"][:, None, None] * est["axial"], g[:, None, None] * h * scale, rtol=1e-9)
    assert (est["radial"][None, None, :] * est["axial"][:, :, None] * model).sum() == pytest.approx(model.sum())


def test_estimate_from_poisson_counts_is_within_its_standard_error():
    geom = fov_geometry(SMALL, 96.0, 7.0)
    model = model_counts(SMALL, geom, 56.0)
    rng = np.random.default_rng(1)
    g, h = imposed(SMALL.rings, geom.n_bins, rng)
    mean = g[None, None, :] * h[:, :, None] * model
    mean *= 4e6 / mean.sum()
    est = estimate_components(rng.poisson(mean).astype(float), model)
    truth = g[None, None, :] * h[:, :, None]
    truth *= model.sum() / (truth * model).sum()
    got = est["radial"][None, None, :] * est["axial"][:, :, None]
    # Per LOR the error is that of g and of h together; 4 standard errors bound every cell.
    se = np.sqrt(1 / est["radial_counts"][None, None, :] + 1 / est["axial_counts"][:, :, None])
    z = (got / truth - 1) / se
    assert np.abs(z).max() < 4.5
    assert abs(z.mean()) < 0.2 and 0.6 < z.std() < 1.4


def test_estimate_rejects_a_cell_without_counts():
    geom = fov_geometry(SMALL, 96.0, 7.0)
    model = model_counts(SMALL, geom, 56.0)
    counts = model.copy()
    counts[:, :, 3] = 0
    estimate_components(counts, model)  # its mirror bin (rho -> -rho) has counts: pooled
    with pytest.raises(ValueError, match="no counts"):
        estimate_components(counts, model, symmetric=False)
    counts[:, :, -4] = 0
    with pytest.raises(ValueError, match="no counts"):
        estimate_components(counts, model)


def test_factors_land_on_their_lors_in_3d_and_2d():
    proj = RingProjector3D(SMALL, 96.0, 24, 7.0, subsets=3)
    geom = proj.geometry
    rng = np.random.default_rng(2)
    g, h = imposed(SMALL.rings, geom.n_bins, rng)
    h = rng.uniform(0.8, 1.2, h.shape)  # no symmetry: a swapped ring pair would show
    norm = {"radial": g, "axial": h}
    f = lor_factors_3d(norm, proj)
    assert f.shape == proj.shape
    # Independently: each LOR's bin from its crystal pair, its rings from the sinogram row.
    _, bin_, valid = geom.cell_of_pair(proj.crystal_a, proj.crystal_b)
    assert valid.all()
    want = h[proj.ring1, proj.ring2][:, None] * g[bin_][None, :]
    assert np.allclose(f, want, rtol=1e-6)
    # The chord order is a->b: binning coincidences (a in r1, b in r2) lands in row r1 * rings + r2.
    sino, n = proj.histogram(
        SMALL.crystal_id(np.array([1]), proj.crystal_a[:1]), SMALL.crystal_id(np.array([5]), proj.crystal_b[:1])
    )
    assert sino[1 * SMALL.rings + 5, 0] == 1 and n == 1
    # 2d: the mean over the plane's ring pairs of cos^2 g h, identical in every view.
    f2 = factors_2d({"radial": g, "axial": np.ones_like(h)}, SMALL, geom, None)
    assert f2.shape == (SMALL.n_planes, *geom.shape)
    assert np.allclose(f2[0, 0], g, rtol=1e-6)  # plane 0 holds the direct pair (0, 0) only: cos = 1
    assert (f2[SMALL.rings - 1, 0] < g).all()  # the central plane mixes oblique pairs: cos^2 < 1


def test_ring_pair_counts_orient_like_the_projector():
    proj = RingProjector3D(SMALL, 96.0, 24, 7.0)
    rng = np.random.default_rng(3)
    n = 5000
    c1 = rng.integers(0, SMALL.n_crystals, n)
    c2 = rng.integers(0, SMALL.n_crystals, n)
    counts, binned = ring_pair_counts(c1, c2, SMALL, proj.geometry)
    sino, n_in = proj.histogram(c1, c2)
    assert binned == n_in
    nb = proj.geometry.n_bins
    bins = proj.order % nb
    per = np.zeros_like(counts)
    for col in range(sino.shape[1]):
        per[:, :, bins[col]] += sino[:, col].reshape(SMALL.rings, SMALL.rings)
    assert np.array_equal(per, counts)


def test_load_refuses_another_geometry(tmp_path):
    geom = fov_geometry(SMALL, 96.0, 7.0)
    path = tmp_path / "n.npz"
    save_normalisation(
        path,
        {
            "format": np.int64(1),
            "radial": np.ones(geom.n_bins),
            "axial": np.ones((8, 8)),
            "crystals_per_ring": np.int64(96),
            "rings": np.int64(8),
            "t_lo": np.int64(geom.t_lo),
            "t_hi": np.int64(geom.t_hi),
            "lor_radius_mm": np.float64(geom.radius_mm),
            "trues": np.int64(1000),
            "seed": np.int64(1),
        },
    )
    assert load_normalisation(path, SMALL, geom)["rings"] == 8
    with pytest.raises(ArtifactError, match="rings"):
        load_normalisation(path, Scanner(crystals_per_ring=96, rings=10), fov_geometry(Scanner(96, 10), 96.0, 7.0))
    with pytest.raises(ArtifactError, match="doi_mm"):
        load_normalisation(path, SMALL, fov_geometry(SMALL, 96.0, 8.0))


# A small ring (inner radius 61 mm, 96 mm long): photons cross the crystals at up to 52 degrees,
# so the radial factor is large, as in a preclinical scanner.
FLAT = {
    "seed": 3,
    "scanner": {"crystals_per_ring": 96, "rings": 24},
    "simulation": {"engine": "fast", "kernel": "numba"},
    "phantom": {"activity_bq": 4.0e6},
    "reconstruction": {
        "mode": "3d",
        "grid": 48,
        "fov_mm": 80.0,
        "iterations": 4,
        "subsets": 4,
        "normalisation": True,
        "normalisation_decays": 2.0e7,
    },
}


def cylinder(radius, length):
    return ActivityCylinder(
        length_mm=length,
        a_mm=radius + 0.5,
        b_mm=radius + 0.5,
        wall_mm=0.5,
        wall_variation=0.0,
        wall_phase=0.0,
        psi=0.0,
        bend_mm=0.0,
        bend_direction=0.0,
        deposit_material="Air",
    )


@pytest.mark.slow
def test_uniform_cylinder_reconstructs_flat_with_normalisation():
    """~1 min: 2e7 decays for the factors, 2e7 for the object (1.2e6 trues each)."""
    from positrongan.recon.driver import postfilter
    from positrongan.recon.osem3d import reconstruct_scan_3d

    torch.manual_seed(0)
    cfg = configlib.validate(FLAT)
    scanner = Scanner.from_config(cfg["scanner"])
    rc = cfg["reconstruction"]
    norm = build_normalisation(cfg, seed=5)
    assert norm["trues"] > 8e5 and float(norm["radial_relative_se_max"]) < 0.01
    # Another object than the normalisation source (smaller, not beyond the rings, another
    # seed): the factors belong to the scanner, not to the source they were measured with.
    radius = 30.0
    c1, c2, _ = simulate_trues(cfg, scanner, cylinder(radius, scanner.axial_length_mm), 2.0e7, seed=17)
    voxel = np.array([scanner.axial_pitch_mm / 2, rc["fov_mm"] / rc["grid"], rc["fov_mm"] / rc["grid"]])
    origin = np.array([0.0, -rc["fov_mm"] / 2 + voxel[1] / 2, -rc["fov_mm"] / 2 + voxel[2] / 2])
    dev = {}
    for name, n in (("plain", None), ("norm", norm)):
        result, meta = reconstruct_scan_3d(c1, c2, None, scanner, rc, None, "cpu", normalisation=n)
        assert meta["normalised"] is (n is not None)
        # The pipeline's 5 mm post-filter; the end planes see few LORs.
        img = postfilter(result.image, voxel, 5.0)[4:-4]
        _, prof = radial_profile(img, voxel, origin, radius - 6.0, 4.0)
        dev[name] = np.abs(prof / prof.mean() - 1)
        print(name, np.round(prof / prof.mean() - 1, 4))
    # Measured: seed 17 (this test) 0.014 with the factors, 0.186 without (the centre 19 % low,
    # the edge 11 % high); seeds 18, 19 (planes 3:-3) 0.015, 0.022 with, 0.196, 0.203 without.
    assert dev["norm"].max() < 0.03
    assert dev["plain"].max() > 0.1


SET = [
    "scanner.crystals_per_ring=64",
    "scanner.rings=4",
    "reconstruction.grid=16",
    "reconstruction.fov_mm=32.0",
    "reconstruction.iterations=2",
    "reconstruction.subsets=2",
    "reconstruction.dicom=true",
    "reconstruction.normalisation_decays=2.0e6",
    "phantom.outer_semi_axes_mm=[12.0, 10.0]",
    "phantom.bend_mm=[0.0, 1.0]",
    "simulation.engine=fast",
    "device=cpu",
]


def opts(*extra):
    out = []
    for s in [*SET, *extra]:
        out += ["--set", s]
    return out


@pytest.mark.parametrize("mode", ["3d", "2d"])
def test_cli_builds_and_applies_the_normalisation(tmp_path, capsys, mode):
    import pydicom
    import uproot

    from positrongan.cli import main

    m = f"reconstruction.mode={mode}"
    norm, png = tmp_path / "normalisation.npz", tmp_path / "normalisation.png"
    assert main(["normalisation", "--out", str(norm), "--png", str(png), *opts(m)]) == 0
    z = np.load(norm)
    assert str(z["mode"]) == mode and z["trues"] > 5e3 and png.stat().st_size > 10_000
    assert z["radial"].shape == (int(z["t_hi"]) - int(z["t_lo"]) + 1,) and z["axial"].shape == (4, 4)
    # Coincidences of a uniform source (another seed) as a scan's ROOT file.
    cfg = configlib.load([], None, [*SET, m])
    scanner = Scanner.from_config(cfg["scanner"])
    c1, c2, _ = simulate_trues(cfg, scanner, cylinder(10.0, scanner.axial_length_mm), 1.0e6, seed=9)
    root = tmp_path / "s.root"
    with uproot.recreate(root) as fh:
        fh["Coincidences"] = {"CrystalID1": c1.astype(np.int32), "CrystalID2": c2.astype(np.int32)}
    base = ["reconstruct", "--scan", "scan_000", "--root", str(root)]
    on = opts(m, "reconstruction.normalisation=true", "reconstruction.attenuation_correction=false")
    out, dicom = tmp_path / "on.npz", tmp_path / "dicom"
    assert main([*base, "--normalisation", str(norm), "--out", str(out), "--dicom", str(dicom), *on]) == 0
    r = np.load(out)
    assert bool(r["normalised"]) and "NORM" in r["corrections"].tolist()
    assert int(r["normalisation_trues"]) == int(z["trues"])
    ds = pydicom.dcmread(sorted(dicom.glob("*.dcm"))[0])
    listed = ds.CorrectedImage  # a str when one value, a MultiValue otherwise
    assert "NORM" in ([listed] if isinstance(listed, str) else list(listed))
    off = opts(m, "reconstruction.attenuation_correction=false", "reconstruction.dicom=false")
    assert main([*base, "--normalisation", str(norm), "--out", str(tmp_path / "off.npz"), *off]) == 0
    r0 = np.load(tmp_path / "off.npz")
    assert not bool(r0["normalised"]) and "NORM" not in r0["corrections"].tolist()
    assert not np.allclose(r["image"], r0["image"])
    # Asked for, but no file: one line naming the key.
    nofile = opts(m, "reconstruction.normalisation=true", "reconstruction.attenuation_correction=false")
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "x.npz"), *nofile, "--set", "reconstruction.dicom=false"]) == 2
    assert "reconstruction.normalisation" in capsys.readouterr().err
