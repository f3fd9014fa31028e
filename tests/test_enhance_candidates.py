"""The reconstruction-side enhancement baselines (enhance/candidates.py): osem_early and map_rdp
pick, per fraction, the candidate reconstruction setting with the best mean val PSNR and use its
test slices; their output follows the enhance contract and is scored by evaluate-enhance; the
workflow plans them."""

import json

import numpy as np
import pytest

from helpers import read_rows
from positrongan.cli import main
from positrongan.enhance.candidates import CandidateFiles, tune
from positrongan.enhance.quality import psnr
from positrongan.io import load_npz, save_npz
from test_enhance import FRACTIONS, PLANES, SIZE, synthetic
from test_workflow import ROOT, snakemake

__all__ = ["synthetic"]  # test_enhance's dataset fixture, shared (pytest finds it by this import)

# Candidate settings (iterations, fwhm_mm); the low-count twins were reconstructed at (2, 5.0).
SETTINGS = [(1, 5.0), (2, 5.0), (2, 7.0), (4, 9.0)]
OWN = 1
# Noise of each candidate per fraction: the best is candidate 2 at the first fraction, 0 at the
# second (the own setting, index 1, is the dataset's noisy twin).
NOISE = {0: [0.30, None, 0.02, 0.15], 1: [0.01, None, 0.20, 0.40]}


def test_tune_picks_the_validation_argmax():
    rng = np.random.default_rng(0)
    ref = rng.random((5, 16, 16))
    noise = [0.2, 0.05, 0.4]
    cands = np.stack([ref + rng.normal(0, s, ref.shape) for s in noise], axis=1)
    best, scores = tune(cands, ref)
    assert best == 1
    want = [psnr(np.clip(cands[:, c], 0, 1), ref).mean() for c in range(3)]
    np.testing.assert_allclose(scores, want)
    assert scores.argmax() == best
    with pytest.raises(ValueError, match="val split is empty"):
        tune(cands[:0], ref[:0])


def write_candidates(root, data: dict, fixture_scales: np.ndarray) -> list:
    """One candidates file per (scan, fraction): plane p's candidate c is, on the dataset's scale,
    the reference plus noise NOISE[j][c] (the own setting: the dataset's twin), stored in
    reconstruction units (times the row's scale and the fraction) as recon/snapshots.py does."""
    rng = np.random.default_rng(3)
    paths = []
    scans = data["scan"].astype(str)
    for scan in sorted(set(scans)):
        rows = np.flatnonzero(scans == scan)
        rows = rows[np.argsort(data["plane"][rows])]
        for j, f in enumerate(FRACTIONS):
            stack = np.empty((len(SETTINGS), len(rows), SIZE, SIZE), np.float32)
            for c in range(len(SETTINGS)):
                if c == OWN:
                    on_scale = data["low_count"][rows, j]
                else:
                    noise = rng.normal(0, NOISE[j][c], (len(rows), SIZE, SIZE))
                    on_scale = np.clip(data["images"][rows] + noise, 0, None)
                stack[c] = on_scale * fixture_scales[rows, None, None] * f
            unit = float(stack.max())
            path = root / f"{scan}_f{f:g}_iterations.npz"
            save_npz(
                path,
                slices=(stack / unit).astype(np.float16),
                unit=np.float64(unit),
                iterations=np.array([s[0] for s in SETTINGS], np.int64),
                fwhm_mm=np.array([s[1] for s in SETTINGS]),
                beta=np.zeros(len(SETTINGS)),
                planes=data["plane"][rows],
                image_size=np.int64(SIZE),
                slice_planes=np.int64(1),
                scan=np.array(scan),
                fraction=np.float64(f),
                reference_iterations=np.int64(SETTINGS[OWN][0]),
                reference_fwhm_mm=np.float64(SETTINGS[OWN][1]),
                seconds=np.float64(1.5),
            )
            paths.append(path)
    return paths


def test_osem_early_chooses_on_val_and_writes_the_enhance_contract(synthetic, tmp_path):
    _, data_path, truth, _ = synthetic
    data = load_npz(data_path)
    scales = np.random.default_rng(5).uniform(0.5, 2.0, len(data["images"]))
    with_scale = tmp_path / "positron.npz"
    save_npz(with_scale, **data, reference_scale=scales)
    paths = write_candidates(tmp_path, data, scales)
    common = ["--set", "dataset.image_size=32", "--set", "dataset.slice_planes=1", "--threads", "1"]
    out = tmp_path / "osem_early" / "seed0.npz"
    argv = ["enhance", "--method", "osem_early", "--dataset", str(with_scale), "--out", str(out)]
    assert main([*argv, "--candidates", *map(str, paths), "--figure", str(out.with_suffix(".png")), *common]) == 0
    e = load_npz(out)
    test_rows = np.flatnonzero(data["split"] == "test")
    # The contract of enhance/{method}/seed{seed}.npz.
    assert e["enhanced"].dtype == np.float32 and e["enhanced"].shape == (PLANES, 2, SIZE, SIZE)
    assert np.array_equal(e["index"], test_rows) and np.allclose(e["fractions"], FRACTIONS)
    assert str(e["method"]) == "osem_early" and int(e["seed"]) == 0
    assert 0 <= e["enhanced"].min() and e["enhanced"].max() <= 1
    # The chosen candidate is the val argmax: 2 at the first fraction, 0 at the second.
    assert e["chosen"].tolist() == [2, 0]
    assert e["val_psnr"].shape == (2, len(SETTINGS)) and e["val_psnr"].argmax(1).tolist() == [2, 0]
    assert e["chosen_iterations"].tolist() == [2, 1] and e["chosen_fwhm_mm"].tolist() == [7.0, 5.0]
    # Its test slices are that candidate's, on the dataset's scale.
    files = CandidateFiles(paths)
    want = files.stack(data | {"reference_scale": scales}, test_rows, np.array(FRACTIONS), pick=e["chosen"])
    np.testing.assert_allclose(e["enhanced"], np.clip(want, 0, 1))
    # The own setting's candidate is the dataset's twin (checked by the stage); a file from other
    # reconstructions is refused.
    own = files.stack(data | {"reference_scale": scales}, test_rows, np.array(FRACTIONS), pick=np.array([OWN, OWN]))
    np.testing.assert_allclose(own, data["low_count"][test_rows], atol=5e-3 * float(np.abs(own).max()))
    val_scan = str(data["scan"][data["split"] == "val"][0])
    val_file = next(p for p in paths if p.name.startswith(val_scan))
    good = load_npz(val_file)
    save_npz(val_file, **{**good, "unit": good["unit"] * 0.5})
    assert main([*argv, "--candidates", *map(str, paths), *common]) == 2
    save_npz(val_file, **good)
    # evaluate-enhance takes it like any method.
    m = tmp_path / "m.csv"
    ev = [
        "evaluate-enhance",
        "--dataset",
        str(with_scale),
        "--enhanced",
        str(out),
        "--truth",
        *map(str, truth.values()),
        "--metrics",
        str(m),
        "--runs",
        str(tmp_path / "r.csv"),
        "--defects",
        str(tmp_path / "d.csv"),
        "--table",
        str(tmp_path / "t.md"),
        "--set",
        "evaluation.msssim_scales=2",
        *common,
    ]
    assert main(ev) == 0
    rows = {(r["method"], float(r["fraction"])): r for r in read_rows(m)}
    assert ("osem_early", 0.1) in rows and ("osem_early", 0.5) in rows
    assert float(rows[("osem_early", 0.1)]["psnr_ref"]) > float(rows[("low_count", 0.1)]["psnr_ref"])
    assert "OSEM, iterations and FWHM tuned on val" in (tmp_path / "t.md").read_text()


def test_candidates_files_must_agree_and_cover_the_rows(synthetic, tmp_path):
    _, data_path, _, _ = synthetic
    data = load_npz(data_path)
    scales = np.ones(len(data["images"]))
    paths = write_candidates(tmp_path, data, scales)
    from positrongan.errors import ArtifactError

    other = load_npz(paths[1])
    other["fwhm_mm"] = other["fwhm_mm"] + 1
    save_npz(paths[1], **other)
    with pytest.raises(ArtifactError, match="differ from the other files"):
        CandidateFiles(paths)
    files = CandidateFiles([paths[0]])
    rows = np.flatnonzero(data["scan"] != str(load_npz(paths[0])["scan"]))[:2]
    with pytest.raises(ArtifactError, match="no candidates file for scan"):
        files.stack(data | {"reference_scale": scales}, rows, np.array(FRACTIONS))
    with pytest.raises(ArtifactError, match="reference_scale"):
        files.stack(data, rows, np.array(FRACTIONS))


def test_workflow_plans_osem_early_and_map_rdp(tmp_path):
    cfg = tmp_path / "c.yaml"
    results = tmp_path / "results"
    cfg.write_text(json.dumps({"results_dir": str(results), "enhancement": {"methods": ["osem_early", "map_rdp"]}}))
    targets = [str(results / "enhance" / m / "seed0.npz") for m in ("osem_early", "map_rdp")]
    res = snakemake("-n", "--cores", "2", "--configfile", str(cfg), "--", *targets, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    text = res.stdout + res.stderr
    for needle in (
        "recon/lowcount/scan_000_f0.1_iterations.npz",
        "--snapshots",
        "rule reconstruct_map",
        "recon/map/scan_000_f0.01.npz",
        "--method osem_early",
        "--method map_rdp",
        "--candidates",
    ):
        assert needle in text, needle
