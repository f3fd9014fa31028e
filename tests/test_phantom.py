"""The tube phantom: shape against its closed forms, defects from the seed, uniform fluid
sampling, truth maps on the reconstruction grid (volumes and attenuation values)."""

import json
import math

import numpy as np
import pytest

from positrongan import config as configlib
from positrongan.errors import ArtifactError, ConfigError
from positrongan.geometry.grid import ReconGrid
from positrongan.geometry.phantom import AIR, FLUID, GAS, WALL, TubePhantom
from positrongan.geometry.scanner import Scanner
from positrongan.io import save_npz
from positrongan.recon.driver import load_truth
from positrongan.simulate.driver import draw_phantom, make_truth, mu_511


def _cfg(**phantom):
    return configlib.validate({"phantom": phantom})


def _plain_tube(**kw):
    args = dict(
        length_mm=100.0,
        a_mm=30.0,
        b_mm=20.0,
        wall_mm=4.0,
        wall_variation=0.5,
        wall_phase=0.3,
        psi=0.0,
        bend_mm=0.0,
        bend_direction=0.0,
        deposit_material="CaCO3",
    )
    args.update(kw)
    return TubePhantom(**args)


def test_wall_follows_ellipse_and_thickness_law():
    tube = _plain_tube()
    phi = np.linspace(0, 2 * np.pi, 50, endpoint=False)
    rout = 30 * 20 / np.sqrt((20 * np.cos(phi)) ** 2 + (30 * np.sin(phi)) ** 2)
    t = 4.0 * (1 + 0.5 * np.cos(phi - 0.3))
    for r, want in ((rout - t - 0.05, FLUID), (rout - t + 0.05, WALL), (rout - 0.05, WALL), (rout + 0.05, AIR)):
        mat = tube.classify(r * np.cos(phi), r * np.sin(phi), np.zeros_like(phi))
        assert np.all(mat == want)
    # Beyond the tube ends there is only air (open pipe section).
    assert np.all(tube.classify(np.zeros(3), np.zeros(3), np.array([50.5, -51.0, 80.0])) == AIR)


def test_bend_and_rotation_move_the_section():
    tube = _plain_tube(psi=math.pi / 2, bend_mm=5.0, bend_direction=0.0, wall_variation=0.0)
    # psi = 90 deg puts the long (30 mm) semi-axis along y; at z = 0 the centre is shifted by 5 mm in x.
    assert tube.classify(np.array([5.0]), np.array([27.0]), np.array([0.0]))[0] == WALL
    assert tube.classify(np.array([5.0 + 17.5]), np.array([0.0]), np.array([0.0]))[0] == WALL
    # At the ends the bend offset vanishes.
    assert tube.classify(np.array([0.0]), np.array([27.0]), np.array([50.0]))[0] == WALL


def test_defects_are_drawn_from_the_seed_within_the_configured_ranges():
    cfg = _cfg(defects={"cracks": {"count": [2, 2]}, "pits": {"count": [1, 3]}, "bubbles": {"count": [0, 0]}})
    a = draw_phantom(cfg, "scan_000")
    b = draw_phantom(cfg, "scan_000")
    c = draw_phantom(cfg, "scan_001")
    assert [d.to_json() for d in a.defects] == [d.to_json() for d in b.defects]
    assert a.describe() == b.describe() and a.describe() != c.describe()
    kinds = [d.type for d in a.defects]
    assert kinds.count("crack") == 2 and 1 <= kinds.count("pit") <= 3 and "bubble" not in kinds
    shape = a.describe()
    for d in a.defects:
        if d.type == "crack":
            assert 1.0 <= d.size["width_mm"] <= 2.5 and 10.0 <= d.size["length_mm"] <= 40.0
        if d.type in ("crack", "pit"):
            # The wall at the defect: t0 (1 + v cos(phi - phi0)), the thickness law of the module.
            t = shape["wall_thickness_mm"] * (1 + shape["wall_variation"] * math.cos(d.phi - shape["wall_phase_rad"]))
            assert d.size["wall_mm"] == pytest.approx(t, rel=1e-12)
        if d.type == "pit":
            assert d.size["depth_mm"] == pytest.approx(d.size["depth_fraction"] * t, rel=1e-12)


def test_crack_lets_fluid_through_the_wall_and_bubble_is_gas():
    cfg = _cfg(
        bend_mm=[0.0, 0.0],
        defects={
            "cracks": {"count": [1, 1]},
            "pits": {"count": [0, 0]},
            "blockages": {"count": [0, 0]},
            "bubbles": {"count": [1, 1]},
        },
    )
    tube = draw_phantom(cfg, "scan_003")
    crack = next(d for d in tube.defects if d.type == "crack")
    u, v, z = crack.local_centre  # mid-wall inside the slit
    x, y, zz = tube.to_global(np.array([u]), np.array([v]), np.array([z]))
    assert tube.classify(x, y, zz)[0] == FLUID
    bubble = next(d for d in tube.defects if d.type == "bubble")
    x, y, z = (np.array([c]) for c in bubble.centre_mm)
    assert tube.classify(x, y, z)[0] == GAS


def test_fluid_samples_are_in_the_fluid_and_uniform_along_z():
    tube = _plain_tube()
    rng = np.random.default_rng(0)
    pts = tube.sample_fluid(40000, rng)
    assert np.all(tube.classify(pts[:, 0], pts[:, 1], pts[:, 2]) == FLUID)
    # Uniform in z (the section does not change with z here): a quarter lies above z = L/4.
    frac = np.mean(pts[:, 2] > 25.0)
    assert abs(frac - 0.25) < 4 * math.sqrt(0.25 * 0.75 / pts.shape[0])


def test_truth_maps_conserve_the_fluid_volume_and_carry_xcom_attenuation():
    cfg = configlib.validate(
        {
            "scanner": {"crystals_per_ring": 96, "rings": 8},
            "reconstruction": {"grid": 48, "fov_mm": 96.0},
            "phantom": {
                "length_mm": 10.0,
                "bend_mm": [0.0, 0.0],
                "defects": {k: {"count": [0, 0]} for k in ("cracks", "pits", "blockages", "bubbles")},
            },
        }
    )
    tube = draw_phantom(cfg, "scan_000")
    truth = make_truth(cfg, tube)
    assert truth["activity"].shape == (15, 48, 48) and truth["defects"].dtype == np.uint8
    assert np.allclose(truth["voxel_mm"], [2.0, 2.0, 2.0])
    # Fluid volume against the polar integral of the inner boundary, 1/2 int r_in^2 dphi x length.
    phi = np.linspace(0, 2 * np.pi, 20001)
    area = 0.5 * np.trapezoid(tube.r_in(phi) ** 2, phi)
    volume = truth["activity"].sum() * np.prod(truth["voxel_mm"])
    assert volume == pytest.approx(area * tube.length_mm, rel=0.03)
    mu = mu_511(tube)
    assert mu[1] == pytest.approx(0.00960, rel=0.005) and mu[2] == pytest.approx(0.02258, rel=0.005)
    centre = truth["mu"][7, 24, 24]  # tube centre: water
    assert centre == pytest.approx(mu[1], rel=1e-4)
    assert truth["mu"].max() == pytest.approx(mu[2], rel=1e-3)  # some voxel lies wholly in the wall
    assert np.all(truth["defects"] == 0)


def test_truth_and_reconstruction_share_one_grid(tmp_path):
    cfg = configlib.validate(
        {
            "scanner": {"crystals_per_ring": 96, "rings": 5, "axial_pitch_mm": 4.17},
            "reconstruction": {"grid": 24, "fov_mm": 90.0},
            "phantom": {"length_mm": 10.0},
        }
    )
    scanner = Scanner.from_config(cfg["scanner"])
    grid = ReconGrid.from_config(scanner, cfg["reconstruction"])
    assert grid.shape == (9, 24, 24) and grid.pixel_mm == pytest.approx(3.75)
    # Plane p at Scanner.plane_z(p), bit for bit; voxel 0 centred half a voxel inside the FOV.
    assert np.array_equal(grid.plane_z, scanner.plane_z(np.arange(scanner.n_planes)))
    assert np.allclose(grid.origin_mm, [-2 * 4.17, -45.0 + 1.875, -45.0 + 1.875])
    assert np.allclose(grid.voxel_mm, [4.17 / 2, 3.75, 3.75])
    truth = make_truth(cfg, draw_phantom(cfg, "scan_000"), scanner)
    assert truth["activity"].shape == grid.shape
    assert np.array_equal(truth["voxel_mm"], grid.voxel_mm.astype(np.float32))
    assert np.array_equal(truth["origin_mm"], grid.origin_mm.astype(np.float32))
    save_npz(tmp_path / "t.npz", **truth)
    assert load_truth(tmp_path / "t.npz", grid)["activity"].shape == grid.shape
    other = ReconGrid.from_config(scanner, {"grid": 24, "fov_mm": 96.0})
    with pytest.raises(ArtifactError, match="origin_mm|voxel_mm"):
        load_truth(tmp_path / "t.npz", other)


def test_truth_maps_index_each_defect_inside_its_type_label():
    cfg = configlib.validate(
        {
            "scanner": {"crystals_per_ring": 96, "rings": 16},
            "reconstruction": {"grid": 64, "fov_mm": 96.0},
            "phantom": {
                "length_mm": 50.0,
                "defects": {
                    "cracks": {"count": [1, 1]},
                    "pits": {"count": [1, 1]},
                    "blockages": {"count": [1, 1], "length_mm": [10.0, 12.0]},
                    "bubbles": {"count": [1, 1]},
                },
            },
        }
    )
    tube = draw_phantom(cfg, "scan_001")
    truth = make_truth(cfg, tube)
    listed = json.loads(str(truth["defect_list"]))
    assert [d["type"] for d in listed] == [d.type for d in tube.defects]
    index, labels = truth["defect_index"], truth["defects"]
    assert index.dtype == np.uint8 and index.max() <= len(listed)
    assert np.array_equal(index > 0, labels > 0)
    for k, d in enumerate(listed):
        mine = index == k + 1
        # Every large enough defect is on the grid, and carries its own type's label there.
        if d["type"] in ("blockage", "bubble"):
            assert mine.any()
        assert np.all(labels[mine] == d["label"])


def test_wall_that_leaves_no_lumen_is_a_config_error():
    with pytest.raises(ConfigError, match="wall_thickness_mm"):
        draw_phantom(_cfg(wall_thickness_mm=25.0, wall_variation=0.0), "scan_000")
