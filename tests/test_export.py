"""Exports for other PET tools, read back by real clients: pytomography's GATE 9 reader
(``get_detector_info`` on our macro, ``get_detector_ids_from_root`` on our ROOT file) and the
petsird reader. Both must give the crystal pairs our own reconstruction reads, event for event.

The scan is simulated by the fast engine on a small scanner whose axial pitch differs from its
crystal pitch, so a swapped spacing or axis would show.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import uproot

from positrongan import config as configlib
from positrongan.cli import main
from positrongan.errors import ArtifactError, ConfigError
from positrongan.export import gate9
from positrongan.export import petsird as pexp
from positrongan.geometry.scanner import Scanner
from positrongan.recon.lors import read_coincidences
from positrongan.rootfile import TRUTH_BRANCHES, read_tree
from positrongan.simulate.driver import simulate_scan

SMALL = {
    "scans": {"count": 1},
    "scanner": {"crystals_per_ring": 96, "rings": 8, "axial_pitch_mm": 3.0},
    "simulation": {"engine": "fast", "chunk_decays": 4000, "write_singles": True},
    "reconstruction": {"grid": 32, "fov_mm": 96.0},
    "phantom": {"activity_bq": 3.0e6, "acquisition_s": 0.025, "length_mm": 30.0},
}

# GATE 9's Coincidences tree (GateRootDefs.cc, GateCoincTree::Init; cylindricalPET output ids).
GATE9_PAIR = (
    ["runID/I", "axialPos/F", "rotationAngle/F"]
    + [
        b.replace("/", f"{k}/")
        for k in (1, 2)
        for b in (
            "eventID/I sourceID/I sourcePosX/F sourcePosY/F sourcePosZ/F time/D energy/F globalPosX/F "
            "globalPosY/F globalPosZ/F gantryID/I rsectorID/I moduleID/I submoduleID/I crystalID/I layerID/I "
            "comptonPhantom/I comptonCrystal/I RayleighPhantom/I RayleighCrystal/I"
        ).split()
    ]
    + ["sinogramTheta/F", "sinogramS/F"]
)
_TYPES = {"I": np.int32, "F": np.float32, "D": np.float64}


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    cfg = configlib.validate(json.loads(json.dumps(SMALL)))
    root = tmp / "scan_000.root"
    simulate_scan(cfg, "scan_000", root, tmp / "scan_000.json", None)
    scanner = Scanner.from_config(cfg["scanner"])
    macro, out = tmp / "scanner.mac", tmp / "gate9.root"
    gate9.write_macro(macro, scanner, cfg["digitizer"])
    counts = gate9.export_root(root, out, scanner, singles=True)
    return {"cfg": cfg, "scanner": scanner, "root": root, "macro": macro, "gate9": out, "counts": counts, "tmp": tmp}


def _gate_branches(name):
    return [b.split("/")[0] for b in GATE9_PAIR] if name != "Singles" else None


def test_id_mapping_is_a_bijection():
    sc = Scanner(crystals_per_ring=96, rings=8)
    ids = np.arange(sc.n_crystals)
    g = gate9.gate9_ids(sc, ids)
    assert np.array_equal(g["rsectorID"], ids % 96) and np.array_equal(g["crystalID"], ids // 96)
    assert not (g["moduleID"].any() or g["submoduleID"].any() or g["layerID"].any() or g["gantryID"].any())
    assert np.array_equal(gate9.crystal_id_from_gate9(sc, g["rsectorID"], g["crystalID"]), ids)


def test_gate9_file_has_gate9_layout_and_units(scan):
    f = uproot.open(scan["gate9"])
    assert {k.split(";")[0] for k in f.keys()} == {"Coincidences", "delay", "Singles"}
    tree = f["Coincidences"]
    assert list(tree.keys()) == _gate_branches("Coincidences")
    got = tree.arrays(library="np")
    for spec in GATE9_PAIR:
        name, t = spec.split("/")
        assert got[name].dtype == _TYPES[t], name
    ours = read_tree(scan["root"], "Coincidences")
    assert scan["counts"]["Coincidences"] == len(ours["EventID1"]) > 500
    for k in ("1", "2"):
        np.testing.assert_allclose(got[f"time{k}"], ours[f"GlobalTime{k}"] * 1e-9, rtol=1e-15)  # ns -> s
        assert np.array_equal(got[f"energy{k}"], ours[f"TotalEnergyDeposit{k}"])  # MeV both
        assert np.array_equal(got[f"sourcePosX{k}"], ours[f"SourcePosition_X{k}"])
        assert np.array_equal(got[f"globalPosZ{k}"], ours[f"PostPosition_Z{k}"])
        assert np.array_equal(got[f"eventID{k}"], ours[f"EventID{k}"])
        assert np.array_equal(got[f"comptonPhantom{k}"] + got[f"RayleighPhantom{k}"], ours[f"PhantomScatters{k}"])
        assert (got[f"comptonCrystal{k}"] == -1).all()  # not known: never claimed to be 0
    # sinogramS is the signed distance of the line through the two interaction points from the
    # axis, sinogramTheta its angle in [0, pi).
    x1, y1, x2, y2 = (got[b].astype(np.float64) for b in ("globalPosX1", "globalPosY1", "globalPosX2", "globalPosY2"))
    dist = np.abs(x1 * y2 - x2 * y1) / np.hypot(x1 - x2, y1 - y2)
    np.testing.assert_allclose(np.abs(got["sinogramS"]), dist, atol=1e-3)
    assert (got["sinogramTheta"] >= 0).all() and (got["sinogramTheta"] < 3.1417).all()
    # The delayed window goes to GATE's "delay" tree, singles to "Singles".
    assert f["delay"].num_entries == read_tree(scan["root"], "Delayed", ["EventID1"])["EventID1"].size > 0
    singles = f["Singles"].arrays(["crystalID", "rsectorID", "time"], library="np")
    ours_s = read_tree(scan["root"], "Singles", ["CrystalID", "GlobalTime"])
    assert np.array_equal(singles["crystalID"] * 96 + singles["rsectorID"], ours_s["CrystalID"])


def test_pytomography_reads_our_macro_as_our_scanner(scan):
    from pytomography.io.PET import gate as ptgate
    from pytomography.io.PET.shared import get_scanner_LUT

    sc = scan["scanner"]
    info = ptgate.get_detector_info(str(scan["macro"]))
    assert info["NrCrystalsPerRing"] == sc.crystals_per_ring and info["NrRings"] == sc.rings
    assert info["crystalAxialSpacing"] == pytest.approx(sc.axial_pitch_mm)
    assert info["radius"] == pytest.approx(sc.inner_radius_mm, abs=1e-4)
    assert info["crystal_length"] == pytest.approx(sc.crystal_depth_mm)
    # Its look-up table puts detector d at our crystal d's front face. pytomography negates z
    # (its own convention, `-Z_crystals` in get_scanner_LUT): axial copy 0 is at -z in GATE, as our ring 0.
    lut = get_scanner_LUT(info).numpy().astype(np.float64)
    front = sc.crystal_centre(np.arange(sc.n_crystals), depth_mm=0.0)
    np.testing.assert_allclose(lut[:, :2], front[:, :2], atol=1e-3)
    np.testing.assert_allclose(-lut[:, 2], front[:, 2], atol=1e-4)


@pytest.mark.parametrize("ours, theirs", [("Coincidences", "Coincidences"), ("Delayed", "delay")])
def test_pytomography_reads_our_crystal_pairs_event_for_event(scan, ours, theirs):
    from pytomography.io.PET import gate as ptgate

    info = ptgate.get_detector_info(str(scan["macro"]))
    ids = ptgate.get_detector_ids_from_root([str(scan["gate9"])], info, substr=theirs).numpy()
    c1, c2 = read_coincidences(scan["root"], scan["scanner"], tree_name=ours)
    assert ids.shape == (len(c1), 2) and len(c1) > 0
    assert np.array_equal(ids[:, 0], c1) and np.array_equal(ids[:, 1], c2)


def test_pytomography_separates_trues_as_our_truth_does(scan):
    """pytomography calls a pair random when its source positions differ and scattered when its
    phantom counts are non-zero: the same trues as ours (one decay, no phantom scatter)."""
    from pytomography.io.PET import gate as ptgate

    info = ptgate.get_detector_info(str(scan["macro"]))
    trues = ptgate.get_detector_ids_from_root(
        [str(scan["gate9"])], info, include_randoms=False, include_scatters=False
    ).numpy()
    t = read_tree(scan["root"], "Coincidences", ["EventID1", "EventID2", "PhantomScatters1", "PhantomScatters2"])
    ours = (t["EventID1"] == t["EventID2"]) & (t["PhantomScatters1"] == 0) & (t["PhantomScatters2"] == 0)
    c1, c2 = read_coincidences(scan["root"], scan["scanner"])
    assert 0 < ours.sum() < len(ours)
    assert np.array_equal(trues, np.stack([c1[ours], c2[ours]], axis=1))


def test_macro_has_every_cylindricalpet_level(scan):
    text = scan["macro"].read_text()
    for level in ("rsector", "module", "submodule", "crystal"):
        assert f"/gate/systems/cylindricalPET/{level}/attach {level}\n" in text
    assert "/gate/rsector/ring/setRepeatNumber 96\n" in text
    assert "/gate/crystal/cubicArray/setRepeatNumberZ 8\n" in text
    # No comment line quotes a command (readers grep the file).
    assert not any(line.startswith("#") and "/gate/" in line for line in text.splitlines())


def test_petsird_round_trip_recovers_our_events(scan, tmp_path):
    import petsird
    from petsird.helpers import expand_detection_bin

    sc, dig = scan["scanner"], scan["cfg"]["digitizer"]
    out = tmp_path / "scan.petsird"
    counts = pexp.export_petsird(scan["root"], out, sc, dig)
    header, got = pexp.read_petsird(out)
    edges = pexp.tof_bin_edges_mm(dig)
    for ours, name, offset in (("Coincidences", "prompts", 0.0), ("Delayed", "delayed", dig["delayed_offset_ns"])):
        c1, c2 = read_coincidences(scan["root"], sc, tree_name=ours)
        t = read_tree(scan["root"], ours, ["GlobalTime1", "GlobalTime2"])
        # A delayed pair's TOF is taken after removing the window offset: it lies inside the
        # coincidence window, never clipped to an end bin.
        dt = t["GlobalTime2"] - offset - t["GlobalTime1"]
        assert (np.abs(dt) <= dig["coincidence_window_ns"]).all()
        b1, b2, tof = pexp.ordered_events(c1, c2, t["GlobalTime1"], t["GlobalTime2"] - offset, edges)
        assert counts[name] == len(c1) > 0
        # Same events in the same order: larger detection bin first, the pair is ours.
        assert np.array_equal(got[name], np.stack([b1, b2, tof], axis=1).astype(np.int64))
        assert np.array_equal(np.maximum(c1, c2), got[name][:, 0]) and np.array_equal(
            np.minimum(c1, c2), got[name][:, 1]
        )
    # 1 ms blocks, consecutive from 0, covering the acquisition.
    acq_ms = round(SMALL["phantom"]["acquisition_s"] * 1000)
    assert np.array_equal(got["block_start_ms"], np.arange(counts["time_blocks"]))
    assert acq_ms - 1 <= counts["time_blocks"] <= acq_ms
    # The detection bin is our CrystalID: module = ring, element = in-ring index.
    scanner_info = header.scanner
    e = expand_detection_bin(scanner_info, 0, 5 * 96 + 17)
    assert (e.module_index, e.element_index, e.energy_index) == (5, 17, 0)
    # Geometry: module transform o element transform of the box centre = our crystal centre.
    rep = scanner_info.scanner_geometry.replicated_modules[0]
    corners = np.array([c.c for c in rep.object.detecting_elements.object.shape.corners], np.float64)
    centre = np.append(corners.mean(axis=0), 1.0)
    pos = []
    for m in rep.transforms:
        for el in rep.object.detecting_elements.transforms:
            p_el = el.matrix.astype(np.float64) @ centre
            pos.append(m.matrix.astype(np.float64) @ np.append(p_el, 1.0))
    np.testing.assert_allclose(np.array(pos), sc.crystal_centre(np.arange(sc.n_crystals)), atol=1e-3)
    assert scanner_info.event_energy_bin_edges[0].edges.tolist() == dig["energy_window_kev"]
    assert scanner_info.bulk_materials[0].name == "LYSO"
    assert sum(scanner_info.bulk_materials[0].mass_fractions) == pytest.approx(1.0)
    assert scanner_info.prompt_event_policy == petsird.CoincidencePolicy.REJECT_HIGHER_MULTIPLES


def test_petsird_tof_points_at_the_decay(scan, tmp_path):
    """For true unscattered pairs, (t1 - t2) c / 2 is half the path difference to the decay, blurred by
    the coincidence timing resolution: the stored TOF bin must agree in sign and size."""
    sc, dig = scan["scanner"], scan["cfg"]["digitizer"]
    out = tmp_path / "scan.petsird"
    pexp.export_petsird(scan["root"], out, sc, dig)
    _, got = pexp.read_petsird(out)
    t = read_tree(scan["root"], "Coincidences")
    true = (t["EventID1"] == t["EventID2"]) & (t["PhantomScatters1"] == 0) & (t["PhantomScatters2"] == 0)
    p = {k: np.stack([t[f"PostPosition_{c}{k}"] for c in "XYZ"], axis=1).astype(np.float64) for k in "12"}
    s = np.stack([t[f"SourcePosition_{c}1"] for c in "XYZ"], axis=1).astype(np.float64)
    swap = t["CrystalID2"] > t["CrystalID1"]  # PETSIRD stores the larger bin first
    first = np.where(swap[:, None], p["2"], p["1"])
    second = np.where(swap[:, None], p["1"], p["2"])
    expected = (np.linalg.norm(first - s, axis=1) - np.linalg.norm(second - s, axis=1)) / 2
    edges = pexp.tof_bin_edges_mm(dig)
    centres = (edges[:-1] + edges[1:]) / 2
    resid = centres[got["prompts"][:, 2]][true] - expected[true]
    sigma = np.sqrt(2) * dig["time_resolution_ps"] * pexp.C_MM_PER_PS / 2 / 2.355
    assert abs(np.median(resid)) < 0.2 * sigma
    assert 0.7 * sigma < 1.4826 * np.median(np.abs(resid - np.median(resid))) < 1.5 * sigma


def test_exports_do_not_depend_on_the_chunk_size(scan, tmp_path):
    sc, dig = scan["scanner"], scan["cfg"]["digitizer"]
    pexp.export_petsird(scan["root"], tmp_path / "a.petsird", sc, dig)
    pexp.export_petsird(scan["root"], tmp_path / "b.petsird", sc, dig, step=97)
    assert (tmp_path / "a.petsird").read_bytes() == (tmp_path / "b.petsird").read_bytes()
    gate9.export_root(scan["root"], tmp_path / "b.root", sc, singles=True, step=97)
    for name in ("Coincidences", "delay", "Singles"):
        a = uproot.open(scan["gate9"])[name].arrays(library="np")
        b = uproot.open(tmp_path / "b.root")[name].arrays(library="np")
        assert all(np.array_equal(a[k], b[k]) for k in a)


def test_export_cli(scan, tmp_path, capsys):
    sets = []
    for section, values in SMALL.items():
        if section == "scanner":
            for k, v in values.items():
                sets += ["--set", f"scanner.{k}={v}"]
    root = str(scan["root"])
    assert main(["export", "--format", "gate9", "--root", root, "--out", str(tmp_path / "g.root"),
                 "--macro", str(tmp_path / "g.mac"), *sets]) == 0  # fmt: skip
    assert (tmp_path / "g.mac").read_text() == scan["macro"].read_text()
    assert uproot.open(tmp_path / "g.root")["Coincidences"].num_entries == scan["counts"]["Coincidences"]
    assert "Singles" not in uproot.open(tmp_path / "g.root")  # export.gate9_singles defaults to false
    assert main(["export", "--format", "petsird", "--root", root, "--out", str(tmp_path / "p.petsird"), *sets]) == 0
    assert (tmp_path / "p.petsird").stat().st_size > 0
    # Errors name what is wrong, and leave nothing behind.
    assert main(["export", "--format", "petsird", "--root", root, "--out", str(tmp_path / "q"), "--macro", "m"]) == 2
    assert "--macro is for --format gate9" in capsys.readouterr().err
    assert main(["export", "--format", "gate9"]) == 2
    assert (
        main(["export", "--format", "gate9", "--root", str(tmp_path / "none.root"), "--out", str(tmp_path / "x")]) == 2
    )
    assert "none.root: file not found" in capsys.readouterr().err
    # Ids beyond the configured scanner: the file was simulated with another geometry.
    assert main(["export", "--format", "petsird", "--root", root, "--out", str(tmp_path / "y"),
                 "--set", "scanner.rings=4", "--set", "scanner.crystals_per_ring=96"]) == 2  # fmt: skip
    assert "another scanner config" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_singles_export_needs_a_singles_tree(scan, tmp_path):
    cfg = configlib.validate(
        json.loads(json.dumps({**SMALL, "simulation": {**SMALL["simulation"], "write_singles": False}}))
    )
    root = tmp_path / "nos.root"
    simulate_scan(cfg, "scan_000", root, tmp_path / "nos.json", None)
    with pytest.raises(ArtifactError, match="no Singles tree"):
        gate9.export_root(root, tmp_path / "x.root", scan["scanner"], singles=True)
    assert gate9.export_root(root, tmp_path / "y.root", scan["scanner"])["Coincidences"] > 0


def test_scan_without_truth_keeps_its_counts_and_gate9_refuses_it_naming_the_key(scan, tmp_path):
    sim = {**SMALL["simulation"], "write_singles": False}
    with_truth = configlib.validate(json.loads(json.dumps({**SMALL, "simulation": sim})))
    without = configlib.validate(json.loads(json.dumps({**SMALL, "simulation": {**sim, "write_truth": False}})))
    a = simulate_scan(with_truth, "scan_000", tmp_path / "a.root", tmp_path / "a.json", None)
    b = simulate_scan(without, "scan_000", tmp_path / "b.root", tmp_path / "b.json", None)
    # The sorter counts trues and scatters in memory: the JSON is the same without the branches.
    for key in ("singles", "prompts", "trues", "scatters", "randoms", "delayed"):
        assert a[key] == b[key], key
    ta, tb = read_tree(tmp_path / "a.root", "Coincidences"), read_tree(tmp_path / "b.root", "Coincidences")
    assert set(ta) - set(tb) == {b + k for b in TRUTH_BRANCHES for k in "12"}
    assert all(np.array_equal(ta[k], tb[k]) for k in tb)
    assert (tmp_path / "b.root").stat().st_size < 0.8 * (tmp_path / "a.root").stat().st_size
    with pytest.raises(ArtifactError, match="simulation.write_truth"):
        gate9.export_root(tmp_path / "b.root", tmp_path / "x.root", scan["scanner"])
    assert not (tmp_path / "x.root").exists()
    # The pipeline refuses the combination before any job runs.
    with pytest.raises(ConfigError, match="simulation.write_truth"):
        configlib.validate({"simulation": {"write_truth": False}, "export": {"formats": ["gate9"]}})
    # PETSIRD carries no truth: it exports such a scan.
    assert pexp.export_petsird(tmp_path / "b.root", tmp_path / "b.petsird", scan["scanner"], without["digitizer"])


def test_petsird_summary_tool_reads_our_file(scan, tmp_path):
    out = tmp_path / "scan.petsird"
    counts = pexp.export_petsird(scan["root"], out, scan["scanner"], scan["cfg"]["digitizer"])
    res = subprocess.run(
        [sys.executable, "-m", "petsird.helpers.analysis", "--input", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert f"Number of prompt events: {counts['prompts']}\n" in res.stdout
    assert f"Number of delayed events: {counts['delayed']}\n" in res.stdout


def test_interop_doc_snippets_run(scan, tmp_path, monkeypatch):
    """The Python snippets of docs/interop.md, on an exported scan under the names they use."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "interop.md").read_text()
    snippets = [c for c in re.findall(r"```python\n(.*?)```", doc, flags=re.S) if "dicom" not in c]
    assert len(snippets) == 2
    (tmp_path / "scanner.mac").write_bytes(scan["macro"].read_bytes())
    (tmp_path / "scan_000.root").write_bytes(scan["gate9"].read_bytes())
    pexp.export_petsird(scan["root"], tmp_path / "scan_000.petsird", scan["scanner"], scan["cfg"]["digitizer"])
    monkeypatch.chdir(tmp_path)
    n = read_tree(scan["root"], "Coincidences", ["EventID1"])["EventID1"].size
    for code in snippets:
        namespace = {}
        exec(compile(code, "docs/interop.md", "exec"), namespace)
    assert namespace["n_prompts"] == n


@pytest.mark.slow
def test_pipeline_writes_the_configured_exports(tmp_path):
    """`export.formats` makes the exports pipeline products (and nothing is exported by default)."""
    root = Path(__file__).resolve().parents[1]
    for item in ("Snakefile", "workflow", "config", "profiles", "envs"):
        src = root / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / item)
    # config/config.yaml drops the truth branches; GATE 9's sourcePos/comptonPhantom need them.
    sim = {**SMALL["simulation"], "write_truth": True}
    cfg = {**SMALL, "scans": {"count": 2}, "simulation": sim, "export": {"formats": ["gate9", "petsird"]}}
    (tmp_path / "exp.yaml").write_text(json.dumps(cfg))
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}

    def snakemake(*args):
        return subprocess.run(
            [str(bindir / "snakemake"), "--cores", "2", *args], cwd=tmp_path, env=env, capture_output=True, text=True
        )

    plan = snakemake("-n", "--quiet", "rules")
    assert plan.returncode == 0 and "export_" not in plan.stdout + plan.stderr
    plan = snakemake("-n", "--quiet", "rules", "--configfile", "exp.yaml")
    assert plan.returncode == 0
    for rule in ("export_gate9_macro", "export_gate9_scan", "export_petsird_scan"):
        assert rule in plan.stdout + plan.stderr
    targets = ["results/export/gate9/scanner.mac"] + [
        f"results/export/{fmt}/scan_00{i}.{ext}"
        for i in (0, 1)
        for fmt, ext in (("gate9", "root"), ("petsird", "petsird"))
    ]
    res = snakemake(*targets, "--configfile", "exp.yaml")  # --configfile takes every word after it
    assert res.returncode == 0, res.stderr[-4000:]
    scanner = Scanner.from_config(configlib.validate(json.loads(json.dumps(cfg)))["scanner"])
    for i in (0, 1):
        sim = tmp_path / f"results/sim/scan_00{i}.root"
        c1, c2 = read_coincidences(sim, scanner)
        _, got = pexp.read_petsird(tmp_path / f"results/export/petsird/scan_00{i}.petsird")
        assert np.array_equal(got["prompts"][:, 0], np.maximum(c1, c2))
        g = uproot.open(tmp_path / f"results/export/gate9/scan_00{i}.root")["Coincidences"].arrays(
            ["rsectorID1", "crystalID1"], library="np"
        )
        assert np.array_equal(g["crystalID1"] * 96 + g["rsectorID1"], c1)
    assert (tmp_path / "results/logs/export_petsird_scan/scan_000.log").exists()
    # Every export is in the default target of this config, and up to date.
    again = snakemake("-n", "--configfile", "exp.yaml", "--quiet", "rules")
    assert again.returncode == 0 and "export_" not in again.stdout + again.stderr


def test_export_crystal_box_is_the_gate_engines():
    from positrongan.export.listmode import crystal_box_mm
    from positrongan.simulate.gate import crystal_box_mm as gate_box

    for sc in (Scanner(), Scanner(crystals_per_ring=96, rings=8, axial_pitch_mm=3.0, crystal_depth_mm=15.0)):
        assert list(crystal_box_mm(sc)) == list(gate_box(sc))
