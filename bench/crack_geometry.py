"""Which cracks are seen: each crack's CNR against its width and the wall's thickness beside it,
from one or more ``detectability.csv`` files (docs/detectability.md, "Which cracks are seen").

Prints one JSON object: per hot type (crack, pit), the N of resolved defects and Spearman's rank
correlation (rho, two-sided p) of CNR with the size column, the wall's thickness and the number
of planes the defect cuts (a crack's length at 2 mm per plane); then, for cracks, the fraction that
reach the target CNR of 3 with the wall thinner and thicker than the median wall of the cracks.
With --png, a figure: crack CNR against wall thickness, marker area by width, the target drawn.

Run (a pooled CSV of several seeds' runs, ``positrongan detectability --recon ... --csv``):
    python bench/crack_geometry.py --csv pooled.csv --png crack_geometry.png
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from positrongan.report.detectability import CNR_TARGET  # noqa: E402

FACTORS = ("size_mm", "wall_mm", "planes")


def load(paths: list[str]) -> pd.DataFrame:
    """The rows of every CSV; cracks and pits with a CNR and a recorded wall thickness."""
    df = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    if "wall_mm" not in df:
        raise SystemExit(f"{paths}: no wall_mm column (detectability.csv written before it); rerun the runs")
    hot = df[df["type"].isin(["crack", "pit"])]
    return hot.dropna(subset=["cnr", "wall_mm"])


def correlations(df: pd.DataFrame) -> dict:
    out = {}
    for kind, rows in df.groupby("type"):
        out[kind] = {"n": int(len(rows))}
        for f in FACTORS:
            if len(rows) < 4 or rows[f].nunique() < 2:
                continue
            r = spearmanr(rows[f], rows["cnr"])
            out[kind][f] = {"rho": round(float(r.statistic), 3), "p": float(f"{r.pvalue:.2g}")}
    return out


def by_wall(cracks: pd.DataFrame) -> dict:
    """Cracks reaching the target, split at the median wall of the cracks."""
    cut = float(cracks["wall_mm"].median())
    target = CNR_TARGET["crack"]
    out = {"median_wall_mm": round(cut, 2)}
    for name, part in (("thin", cracks[cracks["wall_mm"] <= cut]), ("thick", cracks[cracks["wall_mm"] > cut])):
        out[name] = {
            "n": int(len(part)),
            "reach_target": int((part["cnr"] >= target).sum()),
            "median_cnr": round(float(part["cnr"].median()), 2) if len(part) else math.nan,
        }
    return out


def figure(cracks: pd.DataFrame, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    wide = cracks["size_mm"] >= 1.5
    for sel, colour, label in ((wide, "tab:red", "width >= 1.5 mm (target)"), (~wide, "tab:gray", "width < 1.5 mm")):
        part = cracks[sel]
        ax.scatter(part["wall_mm"], part["cnr"], s=60 * part["size_mm"] ** 2, c=colour, alpha=0.7, label=label)
    ax.axhline(CNR_TARGET["crack"], color="k", ls="--", lw=1, label=f"target CNR {CNR_TARGET['crack']:g}")
    ax.set_xlabel("wall thickness at the crack (mm)")
    ax.set_ylabel("CNR")
    ax.set_title(f"Cracks: CNR against the wall beside them (N = {len(cracks)}; marker area ~ width^2)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", nargs="+", required=True, help="detectability.csv file(s)")
    ap.add_argument("--png", help="write the crack figure here")
    args = ap.parse_args(argv)
    df = load(args.csv)
    cracks = df[df["type"] == "crack"]
    result = {"correlations": correlations(df), "cracks_by_wall": by_wall(cracks) if len(cracks) else {}}
    result["cracks"] = [
        {
            k: (round(float(r[k]), 2) if isinstance(r[k], (float, np.floating)) else r[k])
            for k in ("scan", "defect", "size_mm", "wall_mm", "planes", "crc", "cnr")
        }
        for _, r in cracks.sort_values("cnr").iterrows()
    ]
    print(json.dumps(result, indent=1))
    if args.png and len(cracks):
        figure(cracks, args.png)


if __name__ == "__main__":
    main()
