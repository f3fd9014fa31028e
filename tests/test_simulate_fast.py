"""The fast engine through its driver and CLI, on a small scanner: the digitizer's windows,
trues falling with activity, randoms matching the delayed window, reproducible files, the ROOT
schema read back with uproot, and clear errors for corrupt files."""

import json

import numpy as np
import pytest

from positrongan import config as configlib
from positrongan.cli import main
from positrongan.errors import ArtifactError
from positrongan.rootfile import SINGLES_BRANCHES, read_tree
from positrongan.geometry.scanner import Scanner
from positrongan.simulate.driver import run_engine, simulate_scan
from positrongan.simulate.settings import Digitizer

SMALL = {
    "scans": {"count": 2},
    "scanner": {"crystals_per_ring": 96, "rings": 8},
    "simulation": {"engine": "fast", "chunk_decays": 4000},
    "reconstruction": {"grid": 32, "fov_mm": 96.0},
    "phantom": {"activity_bq": 20000.0, "acquisition_s": 0.5, "length_mm": 30.0},
    "digitizer": {},
}


def _cfg(**sections):
    data = json.loads(json.dumps(SMALL))
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return configlib.validate(data)


def _run(tmp_path, name="a", scan="scan_000", **sections):
    cfg = _cfg(**sections)
    root, meta, truth = tmp_path / f"{name}.root", tmp_path / f"{name}.json", tmp_path / f"{name}.npz"
    info = simulate_scan(cfg, scan, root, meta, truth)
    return cfg, info, root


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("sim"))


def test_files_have_the_contract_schema(default_run):
    cfg, info, root = default_run
    singles = read_tree(root, "Singles")
    assert list(singles) == list(SINGLES_BRANCHES)
    assert singles["EventID"].dtype == np.int64 and singles["CrystalID"].dtype == np.int32
    assert singles["PhantomScatters"].dtype == np.int16
    coinc = read_tree(root, "Coincidences")
    assert set(coinc) == {f"{b}{k}" for b in SINGLES_BRANCHES for k in (1, 2)}
    assert "Delayed" in __import__("uproot").open(root)
    assert info["singles"] == singles["EventID"].size and info["prompts"] == coinc["EventID1"].size
    assert info["prompts"] > 100 and info["trues"] + info["scatters"] + info["randoms"] == info["prompts"]
    # Decays are Poisson(activity x time).
    lam = 20000 * 0.5
    assert abs(info["decays"] - lam) < 5 * np.sqrt(lam)
    # Singles come time-ordered; crystal ids and volume ids agree with the scanner convention.
    assert np.all(np.diff(singles["GlobalTime"]) >= 0)
    ring = singles["CrystalID"] // 96
    index = singles["CrystalID"] % 96
    assert all(v == f"0_0_{r}_{i}" for v, r, i in zip(singles["PreStepUniqueVolumeID"][:200], ring, index))
    r = np.hypot(singles["PostPosition_X"], singles["PostPosition_Y"])
    from positrongan.geometry.scanner import Scanner

    sc = Scanner.from_config(cfg["scanner"])
    assert np.all((r >= sc.inner_radius_mm - 1e-6) & (r <= sc.outer_radius_mm + 1e-6))
    assert np.all(
        sc.locate(singles["PostPosition_X"], singles["PostPosition_Y"], singles["PostPosition_Z"])
        == singles["CrystalID"]
    )


def test_every_single_is_in_the_energy_window_and_pairs_in_the_time_window(default_run):
    cfg, _, root = default_run
    lo, hi = (e / 1000 for e in cfg["digitizer"]["energy_window_kev"])
    e = read_tree(root, "Singles", ["TotalEnergyDeposit"])["TotalEnergyDeposit"]
    assert e.min() >= lo and e.max() <= hi
    # A photopeak: the most populated 30 keV bin is the one centred on 511 keV. (Bins narrower
    # than the peak's width, ~50 keV FWHM, hold nearly equal counts at its top: with these ~2e3
    # singles the fullest 10 keV bin wanders 10-20 keV either way from seed to seed.)
    edges = np.arange(0.496 - 0.030 * 10, hi + 0.030, 0.030)  # 30 keV bins, one of them 496-526 keV
    hist, _ = np.histogram(e, edges)
    assert edges[hist.argmax()] < 0.511 < edges[hist.argmax() + 1]
    c = read_tree(root, "Coincidences", ["GlobalTime1", "GlobalTime2"])
    dt = c["GlobalTime2"] - c["GlobalTime1"]
    assert np.all((dt >= 0) & (dt <= cfg["digitizer"]["coincidence_window_ns"]))


def test_truth_npz_on_the_reconstruction_grid(default_run, tmp_path):
    from positrongan.io import load_npz

    cfg, _, root = default_run
    truth = load_npz(root.with_suffix(".npz"), required=("activity", "mu", "defects", "voxel_mm", "origin_mm"))
    assert truth["activity"].shape == (15, 32, 32)
    assert truth["origin_mm"][0] == pytest.approx(-14.0) and truth["origin_mm"][1] == pytest.approx(-48 + 1.5)


def test_trues_fraction_falls_and_randoms_match_delayed_as_activity_rises(tmp_path):
    fractions = []
    for k, (activity, seconds) in enumerate([(1e4, 1.0), (2e6, 0.005), (5e7, 0.0004)]):
        _, info, _ = _run(
            tmp_path,
            f"act{k}",
            phantom={"activity_bq": activity, "acquisition_s": seconds},
            digitizer={"multiples_policy": "take_all_good"},
        )
        fractions.append(info["trues"] / info["prompts"])
        if k == 2:  # high rate: randoms are common, and the delayed window estimates them
            assert info["randoms"] > 200
            assert abs(info["delayed"] - info["randoms"]) < 5 * np.sqrt(info["randoms"])
    assert fractions[0] > fractions[1] > fractions[2]


def test_same_seed_gives_an_identical_file_and_another_seed_does_not(tmp_path):
    # Identical content: ROOT headers also hold the creation time and a UUID, as GATE's files do.
    _, a, ra = _run(tmp_path, "a")
    _, b, rb = _run(tmp_path, "b")
    _, c, rc = _run(tmp_path, "c", scan="scan_001")
    for tree in ("Singles", "Coincidences", "Delayed"):
        ta, tb = read_tree(ra, tree), read_tree(rb, tree)
        assert all(np.array_equal(ta[k], tb[k]) for k in ta), tree
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    assert {k: v for k, v in a.items() if "second" not in k} == {k: v for k, v in b.items() if "second" not in k}
    tc = read_tree(rc, "Singles", ["GlobalTime"])["GlobalTime"]
    ta = read_tree(ra, "Singles", ["GlobalTime"])["GlobalTime"]
    assert tc.size != ta.size or not np.array_equal(tc, ta)


def test_corrupt_or_truncated_root_file_gives_a_clear_error(default_run, tmp_path):
    _, _, root = default_run
    data = root.read_bytes()
    bad = tmp_path / "truncated.root"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="truncated.root"):
        read_tree(bad, "Coincidences")
    junk = tmp_path / "junk.root"
    junk.write_bytes(b"not a root file" * 100)
    with pytest.raises(ArtifactError, match="junk.root.*not a readable ROOT file"):
        read_tree(junk, "Singles")
    with pytest.raises(ArtifactError, match="no tree 'Nope'"):
        read_tree(root, "Nope")
    with pytest.raises(ArtifactError, match="file not found"):
        read_tree(tmp_path / "missing.root", "Singles")


def test_cli_writes_the_three_artifacts_and_rejects_an_unknown_scan(tmp_path, capsys):
    cfg_json = json.dumps(SMALL | {"seed": 3})
    out = [f"--root={tmp_path / 's.root'}", f"--meta={tmp_path / 's.json'}", f"--truth={tmp_path / 't.npz'}"]
    assert main(["simulate", "--config-json", cfg_json, "--scan", "scan_001", *out]) == 0
    meta = json.loads((tmp_path / "s.json").read_text())
    assert meta["engine"] == "fast" and meta["scan"] == "scan_001" and meta["prompts"] > 0
    for defect in meta["defects"]:
        assert {"type", "centre_mm", "size", "label"} <= set(defect)
    assert main(["simulate", "--config-json", cfg_json, "--scan", "scan_009", *out]) == 2
    assert "scans.count" in capsys.readouterr().err


class _HandEngine:
    """A stand-in engine of known singles, in two chunks: the driver alone sorts, writes and counts."""

    separates_scatter = True
    expected_chunks = 2

    def __init__(self, scanner, chunks):
        self.scanner, self._chunks = scanner, chunks

    def compile(self):
        pass

    def chunks(self, rng):
        yield from self._chunks


def _hand_singles(times, events, crystals, scatters):
    n = len(times)
    cols = {
        "EventID": np.asarray(events, np.int64),
        "GlobalTime": np.asarray(times, float),
        "TotalEnergyDeposit": np.full(n, 0.511),
        "CrystalID": np.asarray(crystals, np.int32),
        "PhantomScatters": np.asarray(scatters, np.int16),
    }
    for c in "XYZ":
        cols[f"PostPosition_{c}"] = np.zeros(n, np.float32)
        cols[f"SourcePosition_{c}"] = np.zeros(n, np.float32)
    return cols


def test_the_driver_sorts_writes_and_counts_whatever_the_engine(tmp_path):
    cfg = _cfg(digitizer={"delayed_window": False})
    scanner = Scanner.from_config(cfg["scanner"])
    # A true (event 0), a scatter (event 1) and, across the chunk boundary, a random (events 2, 3);
    # the first chunk is complete up to 40 ns, so the pair 2-3 must wait for the second chunk.
    first = _hand_singles([0.0, 1.0, 20.0, 22.0, 45.0], [0, 0, 1, 1, 2], [0, 50, 3, 60, 7], [0, 0, 0, 2, 0])
    second = _hand_singles([47.0, 200.0], [3, 4], [70, 9], [0, 0])
    engine = _HandEngine(scanner, [(first, 40.0, 3), (second, None, 2)])
    info = run_engine(
        engine,
        "scan_000",
        tmp_path / "h.root",
        Digitizer.from_config(cfg["digitizer"]),
        np.random.default_rng(0),
        write_singles=True,
        write_volume_ids=True,
        expected_decays=5.0,
        write_truth=False,
    )
    assert (info["decays"], info["singles"], info["prompts"]) == (5, 7, 3)
    assert (info["trues"], info["scatters"], info["randoms"], info["delayed"]) == (1, 1, 1, None)
    pairs = read_tree(tmp_path / "h.root", "Coincidences")
    assert sorted(zip(pairs["EventID1"], pairs["EventID2"])) == [(0, 0), (1, 1), (2, 3)]
    # Volume ids derived from CrystalID by the writer (the engine gave none).
    assert str(pairs["PreStepUniqueVolumeID1"][0]) == "0_0_0_0"
    assert "SourcePosition_X1" not in pairs and "PhantomScatters1" not in pairs  # counted in memory only


@pytest.mark.parametrize("chunks", [1, 2, 3])
def test_the_progress_bar_ends_at_the_true_chunk_count(chunks):
    # The engine expects 2 chunks; a Poisson scan can take one more or one less. The bar must end
    # at chunks/chunks and 100 %, not as a bare counter past its total or short of it.
    import io

    from positrongan.runtime import progress_estimated

    out = io.StringIO()
    seen = list(progress_estimated(iter(range(chunks)), 2, file=out, desc="simulate", unit="chunk"))
    assert seen == list(range(chunks))
    final = out.getvalue().split("\r")[-1]
    assert "100%" in final and f" {chunks}/{chunks} " in final, final


def test_singles_rates_tree_counts_the_sorted_singles_per_crystal(default_run, tmp_path):
    from positrongan.rootfile import read_singles_counts

    cfg, info, root = default_run
    sc = Scanner.from_config(cfg["scanner"])
    counts = read_singles_counts(root, sc.n_crystals)
    assert counts.dtype == np.int64 and counts.size == sc.n_crystals
    # Exactly the singles the sorter saw (= the Singles tree when it is written), per crystal.
    crystal = read_tree(root, "Singles", ["CrystalID"])["CrystalID"]
    np.testing.assert_array_equal(counts, np.bincount(crystal, minlength=sc.n_crystals))
    assert counts.sum() == info["singles"]
    # Written without the Singles tree too (the randoms estimate needs it then most).
    _, info2, root2 = _run(tmp_path, name="b", simulation={"write_singles": False})
    assert "Singles" not in __import__("uproot").open(root2)
    assert read_singles_counts(root2, sc.n_crystals).sum() == info2["singles"]


def test_read_singles_counts_is_none_for_files_without_the_tree(tmp_path):
    import uproot

    from positrongan.rootfile import read_singles_counts

    path = tmp_path / "old.root"
    with uproot.recreate(path) as f:
        f["Coincidences"] = {"EventID1": np.arange(3, dtype=np.int64)}
    assert read_singles_counts(path) is None


def test_file_times_are_quantised_within_the_stated_bound(default_run):
    from positrongan.rootfile import TIME_QUANTUM_NS, quantise_time

    _, _, root = default_run
    t = read_tree(root, "Coincidences", ["GlobalTime1", "GlobalTime2"])
    for col in t.values():
        assert np.array_equal(col / TIME_QUANTUM_NS, np.round(col / TIME_QUANTUM_NS))  # on the grid
    # The rounding error is at most half a quantum (< 0.5 ps), at any time of a long acquisition.
    rng = np.random.default_rng(0)
    raw = rng.uniform(0, 3.6e12, 100_000)  # up to one hour, in ns
    err = np.abs(quantise_time(raw) - raw)
    assert np.all(err <= TIME_QUANTUM_NS / 2 + np.spacing(raw)) and TIME_QUANTUM_NS / 2 < 0.5e-3
