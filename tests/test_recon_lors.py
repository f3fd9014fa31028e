"""Coincidences -> crystal pairs -> sinograms: the cell mapping, rebinning counts, ROOT reading
and the errors a bad coincidence file gives."""

import numpy as np
import pytest
import uproot

from positrongan.errors import ArtifactError, ConfigError
from positrongan.geometry.scanner import Scanner
from positrongan.recon.lors import SinogramGeometry, plane_weights, read_coincidences, rebin

SCANNER = Scanner(crystals_per_ring=96, rings=4)


def geom(fov=64.0, doi=0.0):
    return SinogramGeometry.for_grid(SCANNER, fov, doi)


def test_every_cell_is_one_chord_and_pairs_map_back():
    g = geom()
    a, b = g.cell_crystals()
    # Every cell maps back to itself from either crystal order.
    for x, y in ((a, b), (b, a)):
        v, t, ok = g.cell_of_pair(x.ravel(), y.ravel())
        assert ok.all()
        np.testing.assert_array_equal(v.reshape(a.shape), np.arange(g.n_views)[:, None] + 0 * a)
        np.testing.assert_array_equal(t.reshape(a.shape), np.arange(g.n_bins)[None, :] + 0 * a)
    # No two cells share a chord.
    pairs = {tuple(sorted(p)) for p in zip(a.ravel(), b.ravel())}
    assert len(pairs) == a.size


def test_cell_geometry_matches_the_chord_between_its_crystals():
    g = geom()
    p0, p1 = g.endpoints()
    theta = g.view_angle()
    normal = np.stack([np.cos(theta), np.sin(theta)], axis=-1)
    # Both end points lie at the cell's signed distance along its normal.
    r = g.radial_mm()[None, :]
    np.testing.assert_allclose((p0 * normal).sum(-1), r + 0 * theta, atol=1e-9)
    np.testing.assert_allclose((p1 * normal).sum(-1), r + 0 * theta, atol=1e-9)
    # Only chords crossing the image's circumscribed circle are kept, and all of them are.
    assert np.abs(g.radial_mm()).max() <= 64.0 / np.sqrt(2)
    t_next = g.t_lo - 1
    assert abs(g.radius_mm * np.cos(np.pi * t_next / g.crystals)) > 64.0 / np.sqrt(2)


def test_plane_weights_count_ordered_ring_pairs():
    w = plane_weights(SCANNER, None)
    assert w.sum() == SCANNER.rings**2
    np.testing.assert_array_equal(w, [1, 2, 3, 4, 3, 2, 1])
    np.testing.assert_array_equal(plane_weights(SCANNER, 0), [1, 0, 1, 0, 1, 0, 1])


def test_rebinning_conserves_coincidences():
    rng = np.random.default_rng(1)
    n = 5000
    c1 = rng.integers(0, SCANNER.n_crystals, n)
    c2 = rng.integers(0, SCANNER.n_crystals, n)
    sino, stats = rebin(c1, c2, SCANNER, geom(), max_ring_difference=2)
    assert sino.shape == (SCANNER.n_planes, *geom().shape)
    assert sino.sum() == stats["kept"]
    dropped = stats["dropped_ring_difference"] + stats["dropped_same_crystal_index"] + stats["dropped_outside_fov"]
    assert stats["kept"] + dropped == n
    # Each pair lands in plane ring1 + ring2.
    r1, _ = SCANNER.ring_and_index(c1)
    r2, _ = SCANNER.ring_and_index(c2)
    _, _, ok = geom().cell_of_pair(c1 % 96, c2 % 96)
    keep = ok & (np.abs(r1 - r2) <= 2)
    np.testing.assert_array_equal(sino.sum((1, 2)), np.bincount((r1 + r2)[keep], minlength=SCANNER.n_planes))


def test_odd_crystal_count_and_oversized_fov_are_config_errors():
    with pytest.raises(ConfigError, match="crystals_per_ring"):
        SinogramGeometry.for_grid(Scanner(crystals_per_ring=95, rings=2), 40.0, 0.0)
    with pytest.raises(ConfigError, match="fov_mm"):
        SinogramGeometry.for_grid(SCANNER, 200.0, 0.0)


def write_root(path, c1, c2, delayed=None, positions=False):
    with uproot.recreate(path) as fh:
        if positions:
            tree = {}
            for s, c in (("1", c1), ("2", c2)):
                xyz = SCANNER.crystal_centre(c)
                for k, col in zip("XYZ", xyz.T):
                    tree[f"PostPosition_{k}{s}"] = col.astype(np.float32)
            fh["Coincidences"] = tree
        else:
            fh["Coincidences"] = {"CrystalID1": c1.astype(np.int32), "CrystalID2": c2.astype(np.int32)}
        if delayed is not None:
            fh["Delayed"] = {"CrystalID1": delayed[0].astype(np.int32), "CrystalID2": delayed[1].astype(np.int32)}


def test_read_crystal_ids_and_positions(tmp_path):
    rng = np.random.default_rng(2)
    c1 = rng.integers(0, SCANNER.n_crystals, 300)
    c2 = rng.integers(0, SCANNER.n_crystals, 300)
    write_root(tmp_path / "ids.root", c1, c2, delayed=(c2[:10], c1[:10]))
    a, b = read_coincidences(tmp_path / "ids.root", SCANNER)
    np.testing.assert_array_equal(a, c1)
    np.testing.assert_array_equal(b, c2)
    d1, _ = read_coincidences(tmp_path / "ids.root", SCANNER, "Delayed")
    np.testing.assert_array_equal(d1, c2[:10])
    # A GATE file without CrystalID branches: crystals come from the interaction positions.
    write_root(tmp_path / "pos.root", c1, c2, positions=True)
    a, b = read_coincidences(tmp_path / "pos.root", SCANNER)
    np.testing.assert_array_equal(a, c1)
    np.testing.assert_array_equal(b, c2)


@pytest.mark.parametrize("kind", ["zero_bytes", "garbage", "no_tree", "empty_tree", "foreign_ids", "no_branches"])
def test_bad_coincidence_file_names_itself(tmp_path, kind):
    path = tmp_path / f"{kind}.root"
    if kind == "zero_bytes":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(b"root" + bytes(range(256)) * 4)
    elif kind == "no_tree":
        with uproot.recreate(path) as fh:
            fh["Singles"] = {"EventID": np.arange(3)}
    elif kind == "empty_tree":
        write_root(path, np.zeros(0, int), np.zeros(0, int))
    elif kind == "foreign_ids":
        write_root(path, np.array([0, 1]), np.array([5, SCANNER.n_crystals + 7]))
    elif kind == "no_branches":
        with uproot.recreate(path) as fh:
            fh["Coincidences"] = {"EventID1": np.arange(3)}
    with pytest.raises(ArtifactError) as err:
        read_coincidences(path, SCANNER)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)
