"""The pipeline's detectability summary: every defect of every scan, one CSV row each, and a
figure of CNR against defect size per type, with the targets an inspector needs."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

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
    """The per-defect rows stored by the reconstruct stage in each ``recon/{scan}.npz``."""
    rows = []
    for path in recon_paths:
        r = load_npz(path, required=("scan",))
        if "detectability" not in r:
            continue
        for row in from_json(r["detectability"]):
            rows.append({"scan": str(r["scan"]), **row})
    return rows


def write_csv(path: str | Path, rows: list[dict]) -> None:
    """``recon/detectability.csv``: the columns of ``COLUMNS``, NaN written as an empty cell."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(COLUMNS))
        w.writeheader()
        for row in rows:
            w.writerow({k: "" if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()})


def summary(rows: list[dict]) -> dict[str, dict]:
    """Per type: number of defects, and over the target population its N, median CNR and CRC."""
    out = {}
    for t in TYPES:
        mine = [r for r in rows if r["type"] == t]
        pop = [r for r in mine if in_target_population(r) and not math.isnan(r["cnr"])]
        out[t] = {
            "n": len(mine),
            "n_target": len(pop),
            "median_cnr": float(np.median([r["cnr"] for r in pop])) if pop else math.nan,
            "median_crc": float(np.median([r["crc"] for r in pop])) if pop else math.nan,
            "target": CNR_TARGET[t],
        }
    return out


def plot(path: str | Path, rows: list[dict], title: str) -> None:
    """CNR against defect size, one panel per type, the target as a dashed line over the sizes
    it applies to; NaN rows (defect unresolved at the dataset scale) are counted in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(15, 3.8), squeeze=False)
    stats = summary(rows)
    for ax, t in zip(axes[0], TYPES):
        mine = [r for r in rows if r["type"] == t]
        ok = [r for r in mine if not math.isnan(r["cnr"])]
        size_name = {"crack": "width", "pit": "depth", "blockage": "radius", "bubble": "radius"}[t]
        pop = [in_target_population(r) for r in ok]
        ax.scatter(
            [r["size_mm"] for r in ok],
            [r["cnr"] for r in ok],
            c=["C3" if p else "C7" for p in pop],
            s=22,
        )
        ax.axhline(CNR_TARGET[t], ls="--", color="k", lw=0.8, label=f"target {CNR_TARGET[t]:g}")
        ax.axhline(0, color="k", lw=0.4)
        s = stats[t]
        med = f"median {s['median_cnr']:.2f}" if not math.isnan(s["median_cnr"]) else "no defect"
        ax.set_title(
            f"{t}: N={len(mine)} ({len(mine) - len(ok)} unresolved)\n"
            f"target population N={s['n_target']}, {med}",
            fontsize=9,
        )
        ax.set_xlabel(f"{size_name} [mm]")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    axes[0, 0].set_ylabel("CNR (local fluid noise)")
    fig.suptitle(title + "   (red: defects the target applies to)", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
