"""The positron slice dataset: split by scan without leakage, defect slices included, values in
[0, 1], counts from the sinogram, deterministic, and clear errors for bad inputs."""

import functools

import numpy as np
import pytest

from positrongan.cli import main
from positrongan.config import derived_seed, load
from positrongan.data.positron import build_dataset, normalise, split_scans, write_twins
from positrongan.errors import ArtifactError

PLANES, GRID = 15, 24


def fake_scan(folder, scan, rng):
    """A reconstruction and its truth: a tube through planes 2..12, a defect in plane 6."""
    c = np.arange(GRID) - GRID / 2 + 0.5
    x, y = np.meshgrid(c, c)
    ring = (np.hypot(x, y) < 8).astype(np.float32)
    act = np.zeros((PLANES, GRID, GRID), np.float32)
    act[2:13] = ring
    defects = np.zeros(act.shape, np.uint8)
    defects[6, 12, 12] = 1
    image = act * 5 + rng.random(act.shape).astype(np.float32)
    sino = rng.poisson(3.0, (PLANES, 10, 7)).astype(np.float32)
    np.savez(
        folder / f"recon_{scan}.npz",
        image=image,
        sinogram=sino,
        voxel_mm=np.array([2.0, 1, 1]),
        origin_mm=np.array([-14.0, -11.5, -11.5]),
    )
    np.savez(folder / f"truth_{scan}.npz", activity=act, mu=0.01 * act, defects=defects)
    return folder / f"recon_{scan}.npz", folder / f"truth_{scan}.npz"


@pytest.fixture()
def scans(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"scan_{i:03d}" for i in range(6)]
    files = {s: fake_scan(tmp_path, s, rng) for s in ids}
    return {s: f[0] for s, f in files.items()}, {s: f[1] for s, f in files.items()}


def cfg(**over):
    c = load()
    c["dataset"].update(image_size=32, extra_slices_per_scan=4, **over)
    return c


def test_split_has_no_leakage_and_every_split_a_scan(scans):
    recon, truth = scans
    c = cfg()
    data = build_dataset(recon, truth, c["dataset"], functools.partial(derived_seed, c))
    split_of = {}
    for s, sp in zip(data["scan"], data["split"]):
        assert split_of.setdefault(str(s), str(sp)) == str(sp), f"{s} in two splits"
    assert set(split_of.values()) == {"train", "val", "test"}
    assert sorted(split_of) == sorted(recon)


def test_slices_are_normalised_and_include_every_defect_plane(scans):
    recon, truth = scans
    c = cfg()
    data = build_dataset(recon, truth, c["dataset"], functools.partial(derived_seed, c))
    n = len(data["images"])
    assert data["images"].shape == (n, 32, 32) == data["truth"].shape
    assert data["images"].min() >= 0 and data["images"].max() <= 1
    assert data["truth"].min() >= 0 and data["truth"].max() <= 1
    for s in recon:
        mine = data["scan"] == s
        assert mine.sum() == 1 + 4  # the defect plane + the extra ones
        assert 6 in data["plane"][mine] and data["has_defect"][mine & (data["plane"] == 6)].all()
        assert set(data["plane"][mine]) <= set(range(2, 13))  # only planes through the tube
        sino = np.load(recon[s])["sinogram"]
        for p, cnt in zip(data["plane"][mine], data["counts"][mine]):
            assert cnt == sino[p].sum()
    # Same seed, same dataset; another seed draws other extra planes.
    again = build_dataset(recon, truth, c["dataset"], functools.partial(derived_seed, c))
    np.testing.assert_array_equal(again["images"], data["images"])
    c2 = dict(c, seed=1)
    other = build_dataset(recon, truth, c2["dataset"], functools.partial(derived_seed, c2))
    assert not np.array_equal(other["plane"], data["plane"])


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 10, 37])
def test_split_sizes(n):
    ids = [f"s{i}" for i in range(n)]
    split = split_scans(ids, [0.6, 0.2, 0.2], seed=3)
    counts = {k: list(split.values()).count(k) for k in ("train", "val", "test")}
    assert sum(counts.values()) == n and counts["train"] >= 1
    if n >= 3:
        assert min(counts.values()) >= 1
    if n == 2:
        assert counts == {"train": 1, "val": 0, "test": 1}
    if n >= 10:
        assert abs(counts["train"] - 0.6 * n) <= 1


def test_normalise_is_robust_to_a_hot_voxel():
    img = np.ones((20, 20), np.float32)
    img[3, 4] = 1000.0
    out = normalise(img, 99.5)
    assert out.max() == 1.0 and np.median(out) == 1.0
    assert normalise(np.zeros((4, 4)), 99.5).max() == 0


def test_cli_writes_dataset_and_overview(scans, tmp_path, capsys):
    recon, truth = scans
    # The CLI pairs files by stem: give them the contract's names.
    rdir, tdir = tmp_path / "recon", tmp_path / "truth"
    rdir.mkdir()
    tdir.mkdir()
    for s in recon:
        recon[s].rename(rdir / f"{s}.npz")
        truth[s].rename(tdir / f"{s}.npz")
    out = tmp_path / "ds" / "positron.npz"

    def run():
        return main(
            [
                "build-dataset",
                "--set",
                "dataset.image_size=32",
                "--out",
                str(out),
                "--png",
                str(tmp_path / "ds.png"),
                "--recon",
                *map(str, sorted(rdir.glob("*.npz"))),
                "--truth",
                *map(str, sorted(tdir.glob("*.npz"))),
            ]
        )

    assert run() == 0
    z = np.load(out)
    assert {"images", "truth", "scan", "plane", "split", "counts", "has_defect"} <= set(z.files)
    assert (tmp_path / "ds.png").stat().st_size > 5000
    # A missing truth file is named.
    (tdir / "scan_003.npz").unlink()
    capsys.readouterr()
    assert run() == 2
    assert "scan_003" in capsys.readouterr().err


def test_corrupt_reconstruction_is_named(scans):
    recon, truth = scans
    recon["scan_001"].write_bytes(b"not a zip")
    c = cfg()
    with pytest.raises(ArtifactError, match="recon_scan_001"):
        build_dataset(recon, truth, c["dataset"], functools.partial(derived_seed, c))


def test_short_scan_twins_sit_beside_the_reference_on_its_scale(scans, tmp_path):
    recon, truth = scans
    twins = {}
    for scan, path in recon.items():
        r = dict(np.load(path))
        twins[scan] = {}
        for f in (0.1, 0.5):
            # A twin whose image is exactly f times the reference: scaled back it must match.
            p = tmp_path / f"{scan}_f{f:g}.npz"
            np.savez(p, image=r["image"] * f)
            twins[scan][f] = p
    c = cfg(low_count_fractions=[0.1, 0.5], slice_planes=3)
    data = build_dataset(recon, truth, c["dataset"], functools.partial(derived_seed, c), twins)
    n = len(data["images"])
    assert data["low_count"].shape == (n, 2, 32, 32)
    assert list(data["low_count_fractions"]) == [0.1, 0.5]
    ref = data["images"]
    unclipped = ref < 1
    for j in range(2):
        assert np.allclose(data["low_count"][:, j][unclipped], ref[unclipped], atol=1e-5)
    assert data["defect_labels"].shape == (n, 32, 32) and data["defect_labels"].max() == 1
    assert int(data["slice_planes"]) == 3
    write_twins(tmp_path / "twins.png", data)
    assert (tmp_path / "twins.png").stat().st_size > 5000


def test_twins_missing_for_a_configured_fraction_are_named(scans, tmp_path):
    recon, truth = scans
    c = cfg(low_count_fractions=[0.1])
    with pytest.raises(ArtifactError, match="low_count_fractions"):
        build_dataset(recon, truth, c["dataset"], functools.partial(derived_seed, c), {})


def test_thicker_slices_average_adjacent_planes(scans):
    recon, truth = scans
    thin_ = build_dataset(recon, truth, cfg()["dataset"], functools.partial(derived_seed, cfg()))
    c = cfg(slice_planes=5)
    thick = build_dataset(recon, truth, c["dataset"], functools.partial(derived_seed, c))
    # The fake reconstruction is tube + uniform noise: averaging 5 planes lowers the noise.
    inside = thin_["truth"] > 0.99
    assert thick["images"][inside].std() < thin_["images"][inside].std()
