"""The Snakemake workflow: the default config plans, a bad key fails naming it, and a tiny
config runs the whole pipeline end to end."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def snakemake(*args, cwd=ROOT, timeout=600):
    exe = shutil.which("snakemake") or str(Path(sys.executable).with_name("snakemake"))
    return subprocess.run(
        [exe, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
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
