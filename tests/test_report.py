"""The evaluation outputs: table.md laid out like the paper's Table 1, the CLI writing all
four artifacts (metrics, table, grid, held-out reference statistics) reproducibly, clear errors,
and the Snakemake HTML report."""

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from positrongan.cli import main
from positrongan.io import load_npz, save_npz
from positrongan.metrics import fid
from positrongan.report import table

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["ours", "vae", "dcgan", "wgan_gp"]


def _frame(status="ok"):
    rows = []
    for i, m in enumerate(METHODS + ["real"]):
        ok = status == "ok"
        rows.append(
            {
                "method": m,
                "seed": 0,
                "n_train": 30,
                "n_images": 64 if m != "real" else 30,
                "n_test": 20,
                "msssim": 0.1 + 0.01 * i,
                "msssim_pairs": 500,
                "nearest_train_msssim": 0.5,
                "nearest_train_msssim_max": 0.7,
                "fid": 10.0 + i if ok else None,
                "kid": 0.002 if ok else None,
                "kid_std": 0.001 if ok else None,
                "kid_subset_size": 20 if ok else None,
                "fid_status": status,
                "swd": 40.0 + i,
                "c2st": 0.9 if m != "real" else 0.6,
                "c2st_n": 20,
                "train_seconds": 100.0 if m != "real" else None,
                "samples_per_second": 5000.0 if m != "real" else None,
            }
        )
    return pd.DataFrame(rows)


META = {
    "size": 32,
    "n_train": 30,
    "n_test": 20,
    "msssim": {"scales": 3, "window": 7, "sigma": 1.5},
    "swd": {"levels": "32, 16", "patches": 4096, "projections": 128, "patch_size": 7},
    "weights_path": "/x/pt_inception-2015-12-05-6726825d.pth",
}


def _table_rows(text, section=None):
    """Header, then body rows (the separator row dropped) of the main table, or of the table
    under the heading ``## section``."""
    parts = text.split("\n## ")
    body = parts[0] if section is None else next(p for p in parts[1:] if p.startswith(section))
    return [line for line in body.splitlines() if line.startswith("| ") and not line.startswith("| ---")]


def test_capacity_and_attention_tables():
    df = _frame("ok")
    df["g_params"] = 1000.0
    df["d_params"] = 200.0
    df["real_images_seen"] = 8000.0
    df["n_train_images"] = 30.0
    df["attention_slots"] = [12.5, None, None, None, None]  # ours is the first row
    df["memory_slots"] = [30.0, None, None, None, None]  # ours is the first row
    df["attention_max"] = [0.25, None, None, None, None]  # ours is the first row
    df["wa_change"] = [0.5, None, None, None, None]  # ours is the first row
    text = table.render(df, {**META, "fid_status": "ok", "budget": "8,000 real images"})
    cap = _table_rows(text, "Capacity")
    assert [c.strip() for c in cap[4].strip("|").split("|")] == ["Ours", "1,000", "200", "30", "8,000", "100"]
    assert len(cap) == 5 and "8,000 real images" in text  # no row for the real floor
    att = _table_rows(text, "Attention")
    assert len(att) == 2 and [c.strip() for c in att[1].strip("|").split("|")][:5] == [
        "Ours",
        "12.5",
        "30",
        "0.250",
        "0.50",
    ]


def test_table_is_laid_out_like_table_1_with_our_columns():
    text = table.render(_frame("ok"), {**META, "fid_status": "ok"})
    rows = _table_rows(text)
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    assert header[:3] == ["Method", "MS-SSIM", "FID ↓"]  # the paper's columns first
    assert header[3:] == [
        "KID ×10³ ↓",
        "SWD ×10³ ↓",
        "C2ST acc. (0.5 best)",
        "nearest-train MS-SSIM",
        "train time (s)",
        "samples/s",
        "seeds",
    ]
    names = [r.strip("|").split("|")[0].strip() for r in rows[1:]]
    assert names == ["VAE", "DCGAN", "WGAN-GP", "Ours", "Real floor: train vs held-out"]  # paper's row order
    ours = [c.strip() for c in rows[4].strip("|").split("|")]
    assert ours[1] == "0.1000"
    assert ours[2] == "10.0 (N=64/20)"  # N beside every distance
    assert ours[3] == "2.00 ± 1.00 (N=20)"
    assert ours[4] == "40.0 (N=64/20)"
    assert ours[5] == "0.900 (N=20+20)"
    assert ours[7:] == ["100", "5000", "n=1"]  # one seed: the single value, and n=1
    real = [c.strip() for c in rows[5].strip("|").split("|")]
    assert real[4] == "44.0 (N=30/20)" and real[7:] == ["–", "–", "n=1"]
    assert "not comparable" in text and "0.0694" in text
    assert "weights file" not in text


def test_table_shows_mean_and_t_interval_over_seeds():
    rows = []
    for seed, swd in zip((0, 1, 2), (40.0, 42.0, 44.0)):
        rows.append({**_frame("ok").iloc[0].to_dict(), "seed": seed, "swd": swd, "c2st": 0.5 + 0.1 * seed})
    df = pd.concat([pd.DataFrame(rows), _frame("ok").iloc[[4]]], ignore_index=True)
    text = table.render(df, {**META, "fid_status": "ok"})
    ours = [c.strip() for c in _table_rows(text)[1].strip("|").split("|")]
    assert ours[0] == "Ours" and ours[-1] == "n=3"
    # mean 42, sd 2: half-width t(0.975, 2) * 2 / sqrt(3) = 4.303 * 1.1547 = 4.97
    assert ours[4] == "42.0 ± 5.0 (N=64/20)"
    assert ours[5].startswith("0.600 ± 0.248")
    mean, half, n = table.mean_ci([1.0, 2.0])
    assert (mean, n) == (1.5, 2) and half == pytest.approx(12.706 * 0.5, rel=1e-3)
    assert table.mean_ci([3.0]) == (3.0, None, 1)


def test_table_says_unavailable_without_weights():
    text = table.render(_frame(fid.UNAVAILABLE_MISSING), {**META, "fid_status": fid.UNAVAILABLE_MISSING})
    for row in _table_rows(text)[1:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2] == cells[3] == "unavailable: Inception weights missing"
    assert META["weights_path"] in text


def _inputs(root: Path, size=32, n=24):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] / size

    def discs(count, noise):
        r = rng.uniform(0.2, 0.35, (count, 1, 1))
        img = (((xx - 0.5) ** 2 + (yy - 0.5) ** 2) < r**2) * 0.8
        return np.clip(img + noise * rng.standard_normal((count, size, size)), 0, 1).astype(np.float32)

    save_npz(
        root / "dataset" / "positron.npz",
        images=discs(40, 0.05),
        split=np.array(["train"] * 24 + ["val"] * 4 + ["test"] * 12),
        scan=np.array([f"scan_{i // 4:03d}" for i in range(40)]),  # 3 held-out scans
        plane=np.arange(40) % 4,
    )
    for i, m in enumerate(METHODS):
        save_npz(
            root / "samples" / f"{m}_seed0.npz",
            images=discs(n, 0.05 * i),
            method=np.array(m),
            seed=np.int64(0),
            train_seconds=np.array(10.0 * (i + 1)),
            samples_per_second=np.array(1000.0),
        )


def _evaluate(root: Path, out: str, samples=None):
    samples = samples or [str(root / "samples" / f"{m}_seed0.npz") for m in METHODS]
    return main(
        [
            "evaluate",
            "--set", "evaluation.swd_patches=256",
            "--set", "evaluation.samples=20",
            "--set", "device=cpu",
            "--dataset", str(root / "dataset" / "positron.npz"),
            "--samples", *samples,
            "--metrics", str(root / out / "metrics.csv"),
            "--table", str(root / out / "table.md"),
            "--grid", str(root / out / "grid.png"),
            "--reference", str(root / out / "reference.npz"),
        ]
    )  # fmt: skip


def test_evaluate_cli_writes_all_outputs_reproducibly(tmp_path, monkeypatch):
    monkeypatch.setattr("torch.hub.get_dir", lambda: str(tmp_path / "nohub"))
    _inputs(tmp_path)
    assert _evaluate(tmp_path, "a") == 0
    assert _evaluate(tmp_path, "b") == 0
    a = (tmp_path / "a" / "metrics.csv").read_text()
    assert a == (tmp_path / "b" / "metrics.csv").read_text()  # same seed, same numbers
    df = pd.read_csv(tmp_path / "a" / "metrics.csv")
    assert list(df["method"]) == METHODS + ["real", "real_split"]
    assert (df["seed"] == 0).all()
    # evaluation.samples (20) caps N, and the train-vs-held-out floor uses as many of its 24
    # training images: every distance at the same N.
    assert (df["n_images"][:4] == 20).all() and df["n_images"][4] == 20
    assert (df["n_test"][:5] == 12).all()
    # The split-half floor: held-out scans 7 and 9 (8 images) against scan 8 (4 images).
    assert df["n_images"][5] == 8 and df["n_test"][5] == 4
    assert df["c2st"].between(0, 1).all() and (df["c2st_n"][:4] == 12).all()
    assert df["fid"].isna().all() and (df["fid_status"] == fid.UNAVAILABLE_MISSING).all()
    assert list(df["train_seconds"][:4]) == [10.0, 20.0, 30.0, 40.0]
    assert {"swd_32px", "swd_16px"} <= set(df.columns)
    assert "| Ours |" in (tmp_path / "a" / "table.md").read_text()
    png = (tmp_path / "a" / "grid.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # The held-out reference: its floors are the `real` row, its statistics those of the test split.
    ref = load_npz(tmp_path / "a" / "reference.npz")
    real = df[df["method"] == "real"].iloc[0]
    assert int(ref["n_test"]) == 12 and int(ref["n_train"]) == 24 and int(ref["image_size"]) == 32
    assert float(ref["msssim"]) == pytest.approx(real["msssim"], rel=1e-5)
    assert float(ref["swd_train_test"]) == pytest.approx(real["swd"], rel=1e-5)
    assert list(ref["swd_level_px"]) == [32, 16]
    assert float(ref["pixel_histogram"].sum()) == pytest.approx(1.0)
    test = load_npz(tmp_path / "dataset" / "positron.npz")["images"][-12:]
    np.testing.assert_allclose(ref["mean_image"], test.mean(0), rtol=1e-6)
    assert "mu" not in ref  # no Inception statistics without its weights
    assert load_npz(tmp_path / "b" / "reference.npz")["test_sha256"] == ref["test_sha256"]
    assert not list((tmp_path / "a").glob(".*tmp*"))  # nothing half-written left behind


def test_evaluate_cli_names_a_missing_samples_file(tmp_path, capsys):
    _inputs(tmp_path)
    (tmp_path / "samples" / "vae_seed0.npz").unlink()
    assert _evaluate(tmp_path, "a") == 2
    err = capsys.readouterr().err
    assert "vae_seed0.npz" in err and "not found" in err and "Traceback" not in err
    assert not (tmp_path / "a" / "metrics.csv").exists()


@pytest.mark.slow
def test_snakemake_rule_and_html_report(tmp_path):
    """A tiny workflow: fake dataset and samples, then the real evaluate_methods rule and
    `snakemake --report` (run without --cores, as users type it)."""
    _inputs(tmp_path / "inputs")
    (tmp_path / "Snakefile").write_text(textwrap.dedent(f"""
            configfile: "config.yaml"
            report: "{ROOT}/workflow/report/workflow.rst"
            include: "{ROOT}/workflow/rules/common.smk"
            include: "{ROOT}/workflow/rules/evaluate.smk"
            rule fake_inputs:
                output:
                    results("dataset", "positron.npz"),
                    expand(results("samples", "{{method}}_seed0.npz"), method=METHODS),
                shell:
                    "cp -r {tmp_path}/inputs/dataset {tmp_path}/inputs/samples results/"
            rule all:
                input:
                    TARGETS["evaluate"],
                default_target: True
            """))
    (tmp_path / "config.yaml").write_text("device: cpu\nevaluation:\n  samples: 20\n  swd_patches: 256\n")
    exe = shutil.which("snakemake") or str(Path(sys.executable).with_name("snakemake"))
    run = subprocess.run([exe, "--cores", "2"], check=False, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "results" / "eval" / "table.md").exists()
    rep = subprocess.run(
        [exe, "--report", "results/report.html"], check=False, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert rep.returncode == 0, rep.stderr[-3000:]
    html = (tmp_path / "results" / "report.html").read_text()
    for item in ("grid.png", "table.md", "metrics.csv", "Evaluation", "simulates industrial"):
        assert item in html


def test_scarcity_curve_groups_rows_by_method_and_training_size(tmp_path):
    from positrongan.report import scarcity

    rows = []
    for base, n, swd in [
        ("ours", 25, 60.0),
        ("ours", 25, 62.0),
        ("ours", 205, 40.0),
        ("ours", 205, 44.0),
        ("vae", 205, 90.0),
    ]:
        rows.append(
            {"method": f"{base}_n{n}", "base": base, "seed": len(rows), "n_train_images": n, "swd": swd, "c2st": 0.9}
        )
    rows.append({"method": "real", "base": "real", "seed": 0, "n_train_images": None, "swd": 39.0, "c2st": 0.6})
    df = pd.DataFrame(rows)
    c = scarcity.curves(df)
    # The method's own full-data rows, when present, make their point alone: an ablation trained
    # on all images (ours_no_memory) is another generator, not another seed.
    own = [{"method": "ours", "base": "ours", "seed": 0, "n_train_images": 205, "swd": 50.0, "c2st": 0.9}]
    own.append({"method": "ours_no_memory", "base": "ours", "seed": 0, "n_train_images": 205, "swd": 99.0, "c2st": 0.9})
    c_own = scarcity.curves(pd.DataFrame(rows[:2] + own))
    assert c_own["ours"]["swd"][-1][:2] == (205, 50.0)
    assert list(c) == ["ours"]  # the VAE has one N only
    (n1, m1, h1), (n2, m2, h2) = c["ours"]["swd"]
    assert (n1, m1, n2, m2) == (25, 61.0, 205, 42.0)
    assert h1 == pytest.approx(12.706 * 1.0 / 2**0.5 * 2**0.5, rel=1e-3)  # t(0.975, 1) * sd / sqrt(2), sd = sqrt(2)
    csv = tmp_path / "m.csv"
    df.to_csv(csv, index=False)
    scarcity.plot(csv, tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 1000
