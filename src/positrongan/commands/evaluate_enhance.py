"""``positrongan evaluate-enhance``: score every enhancement run on the test slices against the
reference and the truth (PSNR, SSIM, MS-SSIM, per-defect CRC/CNR, hallucination), with the raw
low-count and the reference slices as anchor rows -> enhance_metrics.csv (mean and 95 % CI over
seeds), enhance_runs.csv (per seed), enhance_defects.csv (per defect) and a Markdown table."""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import numpy as np

from ..errors import ArtifactError
from ..io import atomic_path, load_npz

log = logging.getLogger(__name__)

SCAN = re.compile(r"(scan_\d+)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, metavar="NPZ", help="dataset/positron.npz")
    parser.add_argument("--enhanced", nargs="+", required=True, metavar="NPZ", help="enhance/{method}/seed{seed}.npz")
    parser.add_argument("--truth", nargs="+", required=True, metavar="NPZ", help="truth/{scan}.npz (every test scan)")
    parser.add_argument(
        "--recon", nargs="*", default=[], metavar="NPZ", help="recon/lowcount/{scan}_f{f}.npz (reconstruction time)"
    )
    parser.add_argument("--metrics", required=True, metavar="CSV", help="eval/enhance_metrics.csv to write")
    parser.add_argument("--runs", required=True, metavar="CSV", help="eval/enhance_runs.csv to write (per seed)")
    parser.add_argument("--defects", required=True, metavar="CSV", help="eval/enhance_defects.csv to write")
    parser.add_argument("--table", required=True, metavar="MD", help="eval/enhance_table.md to write")


def _scan_of(path: str) -> str:
    m = SCAN.search(Path(path).name)
    if not m:
        raise ArtifactError(f"{path}: cannot tell the scan id from the file name (expected scan_NNN)")
    return m.group(1)


def _recon_seconds(paths: list[str]) -> dict[float, float]:
    per: dict[float, list[float]] = {}
    for p in paths:
        r = load_npz(p, required=("seconds", "image", "count_fraction"))
        per.setdefault(round(float(r["count_fraction"]), 12), []).append(float(r["seconds"]) / len(r["image"]))
    return {f: float(np.mean(v)) for f, v in per.items()}


def run(args: argparse.Namespace, cfg: dict) -> None:
    import pandas as pd

    from ..enhance.evaluate import TestSet, aggregate
    from ..enhance.report import write_table
    from ..metrics.msssim import MSSSIMSettings

    ds = cfg["dataset"]
    data = load_npz(
        args.dataset,
        required=("images", "truth", "low_count", "low_count_fractions", "split", "scan", "plane", "has_defect"),
    )
    test = TestSet(data, {_scan_of(p): p for p in args.truth}, ds["image_size"], ds["slice_planes"])
    if not len(test.index):
        raise ArtifactError(f"{args.dataset}: the test split is empty")
    settings = MSSSIMSettings.from_config(cfg["evaluation"])
    recon = _recon_seconds(args.recon)
    runs, defects = [], []

    def add(method: str, seed: int, fraction: float, images: np.ndarray, extra: dict) -> None:
        scores, rows = test.score(images, settings)
        base = {"method": method, "seed": seed, "fraction": fraction}
        runs.append({**base, **scores, **extra, "recon_seconds_per_plane": recon.get(round(fraction, 12), np.nan)})
        defects.extend({**base, **r} for r in rows)

    add("reference", 0, 1.0, test.reference, {})
    for j, f in enumerate(test.fractions):
        add("low_count", 0, float(f), test.low[:, j], {})
    for path in args.enhanced:
        e = load_npz(path, required=("enhanced", "index", "fractions", "method", "seed"))
        if not np.array_equal(e["index"], test.index):
            raise ArtifactError(f"{path}: its 'index' is not the test slices of {args.dataset}; rerun the enhancement")
        if e["enhanced"].shape != test.low.shape or not np.allclose(e["fractions"], test.fractions):
            raise ArtifactError(
                f"{path}: 'enhanced' {e['enhanced'].shape} at fractions {list(e['fractions'])} does not match the "
                f"test twins {test.low.shape} at {list(test.fractions)}"
            )
        extra = {
            "train_seconds": float(e.get("train_seconds", np.nan)),
            "infer_seconds_per_slice": float(e.get("infer_seconds_per_slice", np.nan)),
            "device": str(e.get("device", "")),
        }
        for j, f in enumerate(test.fractions):
            add(str(e["method"]), int(e["seed"]), float(f), e["enhanced"][:, j], extra)
        log.info("scored %s", path)
    runs_df = pd.DataFrame(runs)
    agg = aggregate(runs_df)
    for out, df in ((args.runs, runs_df), (args.metrics, agg), (args.defects, pd.DataFrame(defects))):
        with atomic_path(out) as tmp:
            df.to_csv(tmp, index=False, float_format="%.6g")
    write_table(args.table, agg)
    log.info("%d runs x fractions scored on %d test slices -> %s", len(runs_df), len(test.index), args.metrics)
