"""The data-scarcity curve (issue 16, item 6): every metric of eval/metrics.csv against the
number of training images, one line per registered method (its rows with
``training.train_images`` set, and the row on all images), mean and 95 % t-interval over seeds.

    positrongan plot-scarcity --metrics results/eval/metrics.csv --out results/eval/scarcity.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ArtifactError
from ..io import atomic_path
from .table import NAMES, mean_ci

METRICS = [
    ("swd", "SWD ×10³ ↓", 1.0),
    ("c2st", "C2ST accuracy (0.5 best)", 1.0),
    ("msssim", "MS-SSIM (diversity)", 1.0),
    ("nearest_train_msssim", "nearest-train MS-SSIM", 1.0),
    ("det_fd", "detector FD ↓", 1.0),
    ("det_recall", "detector recall ↑", 1.0),
]


def curves(df: pd.DataFrame) -> dict[str, dict[str, list[tuple[int, float, float]]]]:
    """base method -> metric -> [(N training images, mean, CI half-width or 0)], N ascending,
    for the methods with at least two values of N. Where the method's own rows (``method`` =
    ``base``) exist at an N, only they make the point: the ablations of the default (e.g.
    ours_no_memory, trained on all images too) are other generators, not more seeds."""
    need = {"base", "n_train_images"}
    if not need <= set(df.columns):
        raise ArtifactError(f"metrics.csv lacks the columns {sorted(need - set(df.columns))} (rerun the evaluation)")
    out: dict[str, dict[str, list[tuple[int, float, float]]]] = {}
    for base, rows in df.dropna(subset=["n_train_images"]).groupby("base"):
        ns = sorted({int(n) for n in rows["n_train_images"]})
        if len(ns) < 2:
            continue
        out[base] = {}
        for col, _, _ in METRICS:
            if col not in rows or rows[col].isna().all():
                continue
            pts = []
            for n in ns:
                at_n = rows[rows["n_train_images"] == n]
                own = at_n[at_n["method"] == base]
                mean, half, k = mean_ci((own if len(own) else at_n)[col])
                if k:
                    pts.append((n, mean, half or 0.0))
            out[base][col] = pts
    return out


def plot(metrics_csv: str | Path, out: str | Path) -> None:
    """Write the figure (one panel per metric) from metrics.csv.

    Raises:
        ArtifactError: no method was trained on two or more training-set sizes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = pd.read_csv(metrics_csv)
    data = curves(df)
    if not data:
        raise ArtifactError(
            f"{metrics_csv}: no method has rows at two training-set sizes (set training.train_images in variants)"
        )
    panels = [m for m in METRICS if any(m[0] in d for d in data.values())]
    cols = min(3, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.0 * cols, 3.2 * nrows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    floor = df[df["method"] == "real"]
    ticks = sorted({n for d in data.values() for pts in d.values() for n, _, _ in pts})
    for ax, (col, title, _) in zip(axes.flat, panels):
        for base, d in data.items():
            if col not in d:
                continue
            n, m, h = (np.array(v) for v in zip(*d[col]))
            ax.errorbar(n, m, yerr=h, marker="o", capsize=3, label=NAMES.get(base, base))
        if col in floor and not floor[col].isna().all():
            ax.axhline(float(floor[col].mean()), color="grey", ls="--", lw=1, label="real floor")
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xlabel("training images N")
        ax.set_title(title, fontsize=9)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Data scarcity: metric against training images (mean ± 95 % CI over seeds)", fontsize=9)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("metrics", help="eval/metrics.csv")
    ap.add_argument("out", help="PNG to write")
    args = ap.parse_args(argv)
    plot(args.metrics, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
