"""Which cracks are seen: each crack's CNR against its width and the wall's thickness beside it,
from one or more ``detectability.csv`` files (docs/detectability.md, "Which cracks are seen").

Prints one JSON object: per hot type (crack, pit), the N of resolved defects and Spearman's rank
correlation (rho, two-sided p) of CNR with the size column, the wall's thickness, the number of
planes the defect cuts (a crack's length at 2 mm per plane) and the truth's own contrast on the
defect's pixels at the dataset scale (contrast / CRC: how much of its pixels it fills), the image's
own contrast and noise, and with
--results where it sits (from the runs' truths: distance from the scanner axis, |z|, azimuth from
the pixel axes); then, for cracks, the fraction that reach the target CNR of 3 with the wall
thinner and thicker than the median wall of the cracks. With --png, a figure: crack CNR against each of width, wall and truth's contrast, the target drawn.

Run (a pooled CSV of several seeds' runs, ``positrongan detectability --recon ... --csv``):
    python bench/crack_geometry.py --csv pooled.csv --png crack_geometry.png \\
        --results results results_s1 results_s2 results_s3
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

# true_contrast: the truth's own contrast on the defect's pixels at the dataset scale (contrast /
# CRC), i.e. how much of those pixels the defect fills: partial volume before any reconstruction.
# contrast and noise (the image's, relative to the local fluid): which of the two CNR follows.
FACTORS = ("size_mm", "wall_mm", "planes", "true_contrast", "contrast", "noise")
POSITION_FACTORS = ("r_mm", "abs_z_mm", "grid_deg")  # with --results


def load(paths: list[str]) -> pd.DataFrame:
    """The rows of every CSV; cracks and pits with a CNR and a recorded wall thickness."""
    df = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    if "wall_mm" not in df:
        raise SystemExit(f"{paths}: no wall_mm column (detectability.csv written before it); rerun the runs")
    hot = df[df["type"].isin(["crack", "pit"])].copy()
    hot["true_contrast"] = hot["contrast"] / hot["crc"]
    return hot.dropna(subset=["cnr", "wall_mm"])


def add_positions(df: pd.DataFrame, results: list[str]) -> pd.DataFrame:
    """Where each defect sits, from its run's truth (``<results>/truth/<scan>.npz``): distance of
    its centre from the scanner axis (``r_mm``), ``abs_z_mm``, and the azimuth of its centre from
    the nearest pixel axis (``grid_deg``, 0-45: a radial crack at 0 runs along a pixel row).
    Pooled scan names ``<folder>/scan_000`` pick the results folder of that name."""
    from positrongan.io import load_npz
    from positrongan.recon.detectability import defect_list

    roots = {Path(r).name: Path(r) for r in results}
    cache, pos = {}, []
    for _, row in df.iterrows():
        folder, _, scan = str(row["scan"]).rpartition("/")
        if folder:
            if folder not in roots:
                raise SystemExit(f"{row['scan']}: no --results folder named {folder}")
            root = roots[folder]
        elif len(results) == 1:
            root = Path(results[0])
        else:
            raise SystemExit(f"{row['scan']}: the CSV of one run takes one --results folder")
        path = root / "truth" / f"{scan}.npz"
        if path not in cache:
            cache[path] = defect_list(load_npz(path, required=("defect_list",)))
        x, y, z = cache[path][int(row["defect"])]["centre_mm"]
        a = math.degrees(math.atan2(y, x)) % 90.0
        pos.append((math.hypot(x, y), abs(z), min(a, 90.0 - a)))
    return df.assign(**dict(zip(POSITION_FACTORS, np.array(pos).T)))


def correlations(df: pd.DataFrame) -> dict:
    out = {}
    for kind, rows in df.groupby("type"):
        out[kind] = {"n": int(len(rows))}
        for f in FACTORS + tuple(c for c in POSITION_FACTORS if c in rows):
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

    axes_of = (
        ("size_mm", "crack width (mm)"),
        ("wall_mm", "wall thickness at the crack (mm)"),
        ("true_contrast", "truth's contrast on the crack's pixels\n(contrast / CRC; 1 = pixels all fluid)"),
    )
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), sharey=True)
    wide = cracks["size_mm"] >= 1.5
    for ax, (col, label) in zip(axes, axes_of):
        for sel, colour, name in ((wide, "tab:red", "width >= 1.5 mm (target)"), (~wide, "tab:gray", "width < 1.5 mm")):
            ax.scatter(cracks.loc[sel, col], cracks.loc[sel, "cnr"], s=25, c=colour, alpha=0.75, label=name)
        ax.axhline(CNR_TARGET["crack"], color="k", ls="--", lw=1, label=f"target CNR {CNR_TARGET['crack']:g}")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("CNR")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Which cracks are seen: {len(cracks)} cracks", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", nargs="+", required=True, help="detectability.csv file(s)")
    ap.add_argument("--png", help="write the crack figure here")
    ap.add_argument("--results", nargs="+", help="the runs' results folders: also correlate with position")
    args = ap.parse_args(argv)
    df = load(args.csv)
    if args.results:
        df = add_positions(df, args.results)
    cracks = df[df["type"] == "crack"]
    result = {"correlations": correlations(df), "cracks_by_wall": by_wall(cracks) if len(cracks) else {}}
    result["cracks"] = [
        {
            k: (round(float(r[k]), 2) if isinstance(r[k], (float, np.floating)) else r[k])
            for k in ("scan", "defect", "size_mm", "wall_mm", "planes", "true_contrast", "crc", "cnr")
        }
        for _, r in cracks.sort_values("cnr").iterrows()
    ]
    print(json.dumps(result, indent=1))
    if args.png and len(cracks):
        figure(cracks, args.png)


if __name__ == "__main__":
    main()
