"""The Snakemake workflow: the default config plans, a bad key fails naming it, and a tiny
config runs the whole pipeline end to end."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def snakemake(*args, cwd=ROOT, timeout=600):
    # The rules call the `positrongan` console script: put this interpreter's scripts first on
    # PATH, so the tests run the same installation whether or not its venv is activated.
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        [str(bindir / "snakemake"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_default_config_dry_run():
    res = snakemake("-n", "--cores", "2", "--quiet", "rules")
    assert res.returncode == 0, res.stderr[-3000:]


def test_paper_config_dry_run(tmp_path):
    # The paper config reads DeepLesion from ct.path; plan it against an (empty) copy of the layout.
    lesion = tmp_path / "DeepLesion"
    (lesion / "Images_png").mkdir(parents=True)
    (lesion / "DL_info.csv").write_text("File_name\n")
    extra = tmp_path / "where.yaml"
    extra.write_text(f"ct:\n  path: {lesion}\n")
    res = snakemake(
        "-n", "--cores", "2", "--quiet", "rules", "--configfile", "config/paper.yaml", str(extra)
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "train_gan" in res.stdout + res.stderr


def test_gpu_overlay_dry_run():
    # --forceall: plan every job even where a results_gpu/ run already exists.
    res = snakemake(
        "-n", "--forceall", "--cores", "2", "--quiet", "rules", "--configfile", "config/config.yaml", "config/gpu.yaml"
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "summarize_detectability" in res.stdout + res.stderr


def test_logs_and_benchmarks_live_under_the_results_dir(tmp_path):
    # A run with another results_dir (config/gpu.yaml, config/paper.yaml) must not overwrite the
    # default run's per-rule logs and timings.
    where = tmp_path / "elsewhere"
    res = snakemake("-n", "--forceall", "--cores", "2", "--config", f"results_dir={where}")
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout + res.stderr
    paths = [
        p.strip().rstrip(",")
        for line in out.splitlines()
        if line.strip().startswith(("log:", "benchmark:"))
        for p in line.split(":", 1)[1].split(",")
    ]
    assert len(paths) > 40, out[-3000:]
    outside = [p for p in paths if not p.startswith(f"{where}/logs/") and not p.startswith(f"{where}/benchmarks/")]
    assert not outside, outside[:5]


def test_unknown_key_fails_naming_it():
    res = snakemake("-n", "--cores", "1", "--config", "simulaton={engine: fast}")
    assert res.returncode != 0
    assert "simulaton" in res.stderr + res.stdout


def test_bad_value_fails_naming_it(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset:\n  split: [0.9, 0.9, 0.1]\n")
    res = snakemake("-n", "--cores", "1", "--configfile", str(bad))
    assert res.returncode != 0
    assert "dataset.split" in res.stderr + res.stdout


@pytest.mark.slow
def test_tiny_config_runs_the_whole_pipeline(tmp_path):
    """`snakemake --cores 2` on a toy-size config: every stage, the table, then nothing to redo."""
    for item in ("Snakefile", "workflow", "config", "profiles", "envs"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / item)
    shutil.copy(ROOT / "tests" / "configs" / "slurm_tiny.yaml", tmp_path / "tiny.yaml")

    res = snakemake("--cores", "2", "--configfile", "tiny.yaml", cwd=tmp_path, timeout=1200)
    assert res.returncode == 0, res.stderr[-4000:]

    table = (tmp_path / "results" / "eval" / "table.md").read_text()
    for row in ("| VAE |", "| DCGAN |", "| WGAN-GP |", "| Ours |", "| Real floor: train vs held-out |"):
        assert row in table
    for path in ("recon/scan_000.png", "eval/grid.png", "train/ours/seed0/samples.png", "config.yaml"):
        assert (tmp_path / "results" / path).stat().st_size > 0, path
    assert not list(tmp_path.glob("results/**/.*.tmp*")), "a temporary file was left behind"

    again = snakemake("-n", "--cores", "2", "--configfile", "tiny.yaml", cwd=tmp_path)
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr
