"""The enhancement figure (one per method) and the Markdown table of ``enhance_metrics.csv``."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..io import atomic_path, write_text

LABELS = {
    "low_count": "Low-count (no enhancement)",
    "gaussian": "Gaussian filter (sigma tuned on val)",
    "osem_early": "OSEM, iterations and FWHM tuned on val",
    "map_rdp": "MAP-OSEM, RDP (beta tuned on val)",
    "unet": "U-Net, L1",
    "pix2pix": "pix2pix (U-Net + PatchGAN + 100 L1)",
    "ours": "Ours (dense memory U-Net + PatchGAN, L1 + L_APG)",
    "reference": "Reference (full counts)",
}
ORDER = list(LABELS)


def pick_slices(labels: np.ndarray, clean: np.ndarray) -> list[tuple[int, str]]:
    """Rows of the figure: per defect type the slice with its largest area, then one defect-free
    slice. Params: labels (N, S, S) type codes, clean (N,) bool. Returns [(row, name)]."""
    from ..geometry.phantom import DEFECT_LABELS

    picks = []
    for name, code in sorted(DEFECT_LABELS.items(), key=lambda kv: -kv[1]):
        area = (labels == code).reshape(len(labels), -1).sum(1)
        if area.max() > 0:
            picks.append((int(np.argmax(area)), name))
    free = np.flatnonzero(clean)
    if len(free):
        picks.append((int(free[len(free) // 2]), "no defect"))
    return picks or [(0, "no defect")]


def write_figure(path, method: str, seed: int, enhanced: np.ndarray, test, data: dict) -> None:
    """PNG: per picked test slice, each fraction's low-count and enhanced slice, the reference and
    the truth, with the true defect outlines (cyan).

    Params:
        path: PNG to write.
        method, seed: for the title.
        enhanced: (N_test, F, S, S).
        test: the test ``PairSet``.
        data: the dataset arrays (truth, defect_labels, scan, plane, has_defect).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = data["defect_labels"][test.index]
    clean = ~data["has_defect"][test.index] if "has_defect" in data else ~labels.reshape(len(labels), -1).any(1)
    picks = pick_slices(labels, clean)
    order = np.argsort(test.fractions)
    titles = []
    for j in order:
        titles += [f"{test.fractions[j]:g} counts", f"{method}, {test.fractions[j]:g}"]
    titles += ["reference", "truth"]
    fig, axes = plt.subplots(len(picks), len(titles), figsize=(1.9 * len(titles), 2.0 * len(picks)), squeeze=False)
    for r, (i, name) in enumerate(picks):
        row = data["truth"][test.index[i]]
        images = []
        for j in order:
            images += [test.low[i, j], enhanced[i, j]]
        images += [test.reference[i], row]
        for c, img in enumerate(images):
            ax = axes[r, c]
            ax.imshow(img, cmap="inferno", vmin=0, vmax=1, origin="lower")
            if labels[i].any():
                ax.contour((labels[i] > 0).astype(float), levels=[0.5], colors="cyan", linewidths=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=7)
        k = test.index[i]
        axes[r, 0].set_ylabel(f"{data['scan'][k]} plane {data['plane'][k]}\n{name}", fontsize=7)
    fig.suptitle(f"enhancement: {LABELS.get(method, method)}, seed {seed} (test scans; cyan: true defects)", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


def _cell(row: pd.Series, key: str, fmt: str, scale: float = 1.0) -> str:
    v = row.get(key, math.nan)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if not np.isfinite(v):
        return "∞" if v > 0 else "–"
    ci = row.get(f"{key}_ci95", math.nan)
    text = format(v * scale, fmt)
    if ci is not None and not (isinstance(ci, float) and math.isnan(ci)):
        text += f" ± {format(ci * scale, fmt)}"
    return text


COLUMNS = [
    ("fraction", None, None),
    ("Method", None, None),
    ("PSNR ref (dB)", "psnr_ref", ".2f"),
    ("SSIM ref", "ssim_ref", ".3f"),
    ("MS-SSIM ref", "msssim_ref", ".3f"),
    ("PSNR truth (dB)", "psnr_truth", ".2f"),
    ("SSIM truth", "ssim_truth", ".3f"),
    ("CRC (mean)", "crc", ".2f"),
    ("CNR (median)", "cnr", ".2f"),
    ("CNR blockage", "cnr_blockage", ".2f"),
    ("CNR bubble", "cnr_bubble", ".2f"),
    ("CNR crack", "cnr_crack", ".2f"),
    ("CNR pit", "cnr_pit", ".2f"),
    ("cold spots %", "cold_spot", ".2f"),
    ("hot spots %", "hot_spot", ".2f"),
    ("wall ratio", "wall_ratio", ".2f"),
    ("train (s)", "train_seconds", ".1f"),
    ("ms / slice", "infer_seconds_per_slice", ".2f"),
    ("seeds", None, None),
]


def render(df: pd.DataFrame) -> str:
    """Markdown table of the aggregated metrics: rows by fraction (fewest counts first), then
    method in ``ORDER``; mean ± 95 % CI over seeds; N under the table."""
    lines = [
        "| " + " | ".join(c[0] for c in COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    rank = {m: i for i, m in enumerate(ORDER)}
    df = df.assign(_r=df["method"].map(lambda m: rank.get(m, len(rank)))).sort_values(["fraction", "_r"])
    for _, row in df.iterrows():
        cells = []
        for name, key, fmt in COLUMNS:
            if name == "fraction":
                cells.append(f"{row['fraction']:g}")
            elif name == "Method":
                cells.append(LABELS.get(row["method"], row["method"]))
            elif name == "seeds":
                cells.append(str(int(row["n_seeds"])))
            else:
                scale = (
                    100.0 if key in ("cold_spot", "hot_spot") else 1000.0 if key == "infer_seconds_per_slice" else 1.0
                )
                cells.append(_cell(row, key, fmt, scale))
        lines.append("| " + " | ".join(cells) + " |")
    first = df.iloc[0]
    n = (
        f"N = {int(first['n_slices'])} test slices per row ({int(first['n_defect_free'])} defect-free for the "
        f"hallucination columns), {int(first['n_defects'])} scored defects (per type: "
        + ", ".join(f"{t} {int(first.get(f'n_{t}', 0))}" for t in ("blockage", "bubble", "crack", "pit"))
        + "). Mean ± 95 % t-interval over the training seeds (one value where seeds = 1). "
        "PSNR/SSIM/MS-SSIM against the reference slice (ref) and the true activity (truth); CRC and "
        "CNR per defect (recon.detectability); cold/hot spots and the wall ratio on defect-free slices "
        "(docs/enhancement.md). Inference time per slice on the device of each run; train time of the "
        "whole run."
    )
    recon = df.dropna(subset=["recon_seconds_per_plane"]) if "recon_seconds_per_plane" in df else df.iloc[:0]
    if len(recon):
        times = ", ".join(
            f"fraction {r['fraction']:g}: {1e3 * r['recon_seconds_per_plane']:.0f} ms"
            for _, r in recon.drop_duplicates("fraction").iterrows()
        )
        n += f" The reconstruction itself takes per plane: {times}."
    return "\n".join(lines) + "\n\n" + n + "\n"


def write_table(path, df: pd.DataFrame) -> None:
    """Write :func:`render` to ``path`` atomically."""
    write_text(path, "# Enhancement of short-scan slices (test scans)\n\n" + render(df))
