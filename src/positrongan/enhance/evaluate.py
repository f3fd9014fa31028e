"""Scoring of enhanced test slices: per (method, seed, fraction) image scores, per-defect CRC/CNR
and the hallucination measures (``quality``), then mean and 95 % CI over seeds.

Anchor rows computed from the dataset itself: ``low_count`` (the raw short-scan slice, clipped to
[0, 1] like every enhanced image: "before enhancement") and ``reference`` (the full-count slice,
fraction 1: what the full scan shows). Every image is scored on the dataset's [0, 1] scale.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..recon.detectability import COLD, HOT
from ..report.table import mean_ci
from .quality import defect_scores, hallucination, image_scores, masks, scan_truth

IMAGE_METRICS = ("psnr_ref", "ssim_ref", "msssim_ref", "psnr_truth", "ssim_truth", "msssim_truth")
DEFECT_METRICS = ("crc", "cnr") + tuple(f"cnr_{t}" for t in COLD + HOT)
HALLUCINATION = ("cold_spot", "hot_spot", "wall_ratio")
TIMING = ("train_seconds", "infer_seconds_per_slice")
METRICS = IMAGE_METRICS + DEFECT_METRICS + HALLUCINATION + TIMING


class TestSet:
    """The test slices of the dataset with their truth at the dataset's scale.

    Params:
        data: the dataset arrays (``load_npz`` of positron.npz).
        truth_paths: scan id -> ``truth/{scan}.npz`` (at least every test scan).
        image_size, slice_planes: the ``dataset`` config.
    """

    def __init__(self, data: dict, truth_paths: dict[str, str | Path], image_size: int, slice_planes: int):
        from ..errors import ArtifactError

        self.index = np.flatnonzero(data["split"].astype(str) == "test")
        self.reference = data["images"][self.index]
        self.truth = data["truth"][self.index]
        self.low = data["low_count"][self.index]
        self.fractions = np.asarray(data["low_count_fractions"], np.float64)
        self.scan = data["scan"].astype(str)[self.index]
        self.plane = data["plane"][self.index]
        self.clean = ~data["has_defect"][self.index]
        self.scans: dict[str, tuple[np.ndarray, dict]] = {}
        self.masks: dict[int, dict] = {}
        for scan in sorted(set(self.scan)):
            if scan not in truth_paths:
                raise ArtifactError(f"no truth file given for test scan {scan} (pass truth/{scan}.npz)")
            rows = np.flatnonzero(self.scan == scan)
            rows = rows[np.argsort(self.plane[rows])]
            t = scan_truth(truth_paths[scan], self.plane[rows], image_size, slice_planes)
            self.scans[scan] = (rows, t)
            for k, r in enumerate(rows):
                if self.clean[r]:
                    self.masks[int(r)] = masks(t["activity"][k], t["mu"][k])

    def score(self, images: np.ndarray, msssim_settings) -> tuple[dict, list[dict]]:
        """Scores of (N_test, S, S) images in test order.

        Returns:
            (the run's metrics: image means, defect CRC mean / CNR median (overall and per type),
            hallucination means, and their N; the per-defect rows).
        """
        images = np.clip(images, 0.0, 1.0)
        out = {
            k: float(np.mean(v)) for k, v in image_scores(images, self.reference, self.truth, msssim_settings).items()
        }
        if np.array_equal(images, self.reference):  # the reference row: no score against itself
            out.update({k: math.nan for k in out if k.endswith("_ref")})
        out["n_slices"] = len(images)
        rows = []
        for scan, (idx, t) in self.scans.items():
            for r in defect_scores(images[idx], t):
                rows.append({"scan": scan, **r})
        crc = np.array([r["crc"] for r in rows], float)
        cnr = np.array([r["cnr"] for r in rows], float)
        out["crc"] = float(np.nanmean(crc)) if np.isfinite(crc).any() else math.nan
        out["cnr"] = float(np.nanmedian(cnr)) if np.isfinite(cnr).any() else math.nan
        out["n_defects"] = int(np.isfinite(cnr).sum())
        for t in COLD + HOT:
            v = np.array([r["cnr"] for r in rows if r["type"] == t], float)
            out[f"cnr_{t}"] = float(np.nanmedian(v)) if np.isfinite(v).any() else math.nan
            out[f"n_{t}"] = int(np.isfinite(v).sum())
        hall = [hallucination(images[r], self.reference[r], m) for r, m in self.masks.items()]
        for k in HALLUCINATION:
            v = np.array([h[k] for h in hall], float)
            out[k] = float(np.nanmean(v)) if np.isfinite(v).any() else math.nan
        out["n_defect_free"] = len(hall)
        return out, rows


def aggregate(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95 % t-interval half-width over seeds of every metric, per (method, fraction).

    Params:
        runs: one row per (method, seed, fraction) with the METRICS columns.
    Returns:
        One row per (method, fraction): ``{metric}`` (mean), ``{metric}_ci95`` (NaN with one
        seed), ``n_seeds``, ``seeds`` and the N columns of the runs (equal across seeds).
    """
    out = []
    counts = [c for c in runs.columns if c.startswith("n_")]
    for (method, fraction), g in runs.groupby(["method", "fraction"], sort=False):
        row = {"method": method, "fraction": fraction}
        for c in counts:
            row[c] = int(g[c].max())
        for m in METRICS:
            if m not in g:
                continue
            mean, half, n = mean_ci(g[m].tolist())
            row[m] = mean
            row[f"{m}_ci95"] = math.nan if half is None else half
        row["n_seeds"] = int(g["seed"].nunique())
        row["seeds"] = " ".join(str(s) for s in sorted(g["seed"].unique()))
        for c in ("device", "recon_seconds_per_plane"):
            if c in g:
                row[c] = g[c].iloc[0]
        out.append(row)
    return pd.DataFrame(out)
