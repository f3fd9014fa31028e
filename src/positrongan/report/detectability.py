"""The pipeline's detectability summary: every defect of every scan, one CSV row each, and a
figure of CNR against defect size per type, with the targets an inspector needs."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from scipy.stats import quantile_test

from ..io import atomic_path, load_npz
from ..recon.detectability import COLUMNS, from_json

# The CNR an inspector needs (docs/detectability.md): cold defects >= 5, cracks and deep pits >= 3.
CNR_TARGET = {"blockage": 5.0, "bubble": 5.0, "crack": 3.0, "pit": 3.0}
# Defects the targets are stated for: blockages and bubbles of radius >= 4 mm, cracks >= 1.5 mm
# wide, pits deeper than half the wall.
TYPES = ("crack", "pit", "blockage", "bubble")


def in_target_population(row: dict) -> bool:
    """Whether the CNR target applies to this defect (large enough to be required visible)."""
    if row["type"] in ("blockage", "bubble"):
        return row["size_mm"] >= 4.0
    if row["type"] == "crack":
        return row["size_mm"] >= 1.5
    return row["depth_fraction"] > 0.5


def collect(recon_paths: list[str | Path]) -> list[dict]:
    """The per-defect rows stored by the reconstruct stage in each ``recon/{scan}.npz``.

    Runs pooled together (several seeds' ``results*/recon/``) repeat scan ids; then every row's
    scan is named with its results folder, ``results_s1/scan_000``."""
    loaded = []
    for p in recon_paths:
        r = load_npz(p, required=("scan",))
        loaded.append((Path(p), {k: r[k] for k in ("scan", "detectability") if k in r}))  # not the images
    ids = [str(r["scan"]) for _, r in loaded]
    pooled = len(set(ids)) < len(ids)
    rows = []
    for (path, r), scan in zip(loaded, ids):
        if "detectability" not in r:
            continue
        if pooled:
            scan = f"{path.absolute().parent.parent.name}/{scan}"
        for row in from_json(r["detectability"]):
            rows.append({"scan": scan, **row})
    return rows


def write_csv(path: str | Path, rows: list[dict]) -> None:
    """``recon/detectability.csv``: the columns of ``COLUMNS``, NaN written as an empty cell."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(COLUMNS))
        w.writeheader()
        for row in rows:
            w.writerow({k: "" if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()})


def median_ci95(values) -> tuple[float, float]:
    """Distribution-free 95 % confidence interval of a population median from a sample: the pair
    of order statistics that the binomial sign test gives (scipy's ``quantile_test``). With fewer
    than 6 values no such pair reaches 95 % (min to max covers 1 - 2^(1-N): 94 % at N = 5), and
    the interval is (nan, nan): a median of 3-4 defects is not a result to hold a target to."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return math.nan, math.nan
    ci = quantile_test(v, q=float(np.median(v)), p=0.5).confidence_interval(0.95)
    return float(ci.low), float(ci.high)


def summary(rows: list[dict]) -> dict[str, dict]:
    """Per type: number of defects, and over the target population its N, median CNR (with the
    95 % interval of :func:`median_ci95`) and median CRC; for cracks and pits also how many of
    the target population the wall search scored (``searched``) and found (``found``)."""
    out = {}
    for t in TYPES:
        mine = [r for r in rows if r["type"] == t]
        pop = [r for r in mine if in_target_population(r) and not math.isnan(r["cnr"])]
        cnr = [r["cnr"] for r in pop]
        # Rows of older recon files have no search columns.
        searched = [r["search_found"] for r in mine if in_target_population(r) and _finite(r.get("search_found"))]
        out[t] = {
            "n": len(mine),
            "n_target": len(pop),
            "median_cnr": float(np.median(cnr)) if pop else math.nan,
            "cnr_ci95": median_ci95(cnr),
            "median_crc": float(np.median([r["crc"] for r in pop])) if pop else math.nan,
            "target": CNR_TARGET[t],
            "searched": len(searched),
            "found": int(sum(f == 1.0 for f in searched)),
        }
    return out


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def format_median(s: dict) -> str:
    """One type's :func:`summary` as text: ``median 2.34, 95 % CI [1.81, 3.17]`` (no CI below N = 6)."""
    if math.isnan(s["median_cnr"]):
        return "no defect"
    lo, hi = s["cnr_ci95"]
    ci = f"95 % CI [{lo:.2f}, {hi:.2f}]" if not math.isnan(lo) else "no 95 % CI at N < 6"
    return f"median {s['median_cnr']:.2f}, {ci}"


def format_found(s: dict, lead: str = "") -> str:
    """One type's wall-search result as text after ``lead`` (``found along the wall: 4 of 5``);
    empty for the types the search does not look for (blockages and bubbles)."""
    return f"{lead}found along the wall: {s['found']} of {s['searched']}" if s["searched"] else ""


def plot(path: str | Path, rows: list[dict], title: str) -> None:
    """CNR against defect size, one panel per type, the target as a dashed line over the sizes
    it applies to; NaN rows (defect unresolved at the dataset scale) are counted in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(15, 4.4), squeeze=False)
    stats = summary(rows)
    for ax, t in zip(axes[0], TYPES):
        mine = [r for r in rows if r["type"] == t]
        ok = [r for r in mine if not math.isnan(r["cnr"])]
        size_name = {"crack": "width", "pit": "depth", "blockage": "radius", "bubble": "radius"}[t]
        colours = ["C3" if in_target_population(r) else "C7" for r in ok]
        missed = [r.get("search_found") == 0.0 for r in ok]  # hollow: the wall search did not find it
        ax.scatter(
            [r["size_mm"] for r in ok],
            [r["cnr"] for r in ok],
            facecolors=["none" if m else c for c, m in zip(colours, missed)],
            edgecolors=colours,
            s=22,
        )
        ax.axhline(CNR_TARGET[t], ls="--", color="k", lw=0.8, label=f"target {CNR_TARGET[t]:g}")
        ax.axhline(0, color="k", lw=0.4)
        s = stats[t]
        ax.set_title(
            f"{t}: N={len(mine)} ({len(mine) - len(ok)} unresolved)\n"
            f"target population N={s['n_target']}\nCNR {format_median(s)}"
            + format_found(s, "\n"),
            fontsize=8,
        )
        ax.set_xlabel(f"{size_name} [mm]")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    axes[0, 0].set_ylabel("CNR (local fluid noise)")
    fig.suptitle(
        title + "   (red: defects the target applies to; hollow: a crack or pit the wall search did not find)",
        fontsize=10,
    )
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
