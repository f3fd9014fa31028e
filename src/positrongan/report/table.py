"""metrics.csv -> table.md, laid out like the paper's Table 1 (METHOD, MS-SSIM, FID) with our
extra columns: KID, SWD, memorisation, training time and sampling speed, N beside every distance."""

from __future__ import annotations

import math

import pandas as pd

from ..train.registry import METHODS

# Row order and names come from the method registry (the paper's Table 1 order), then the
# real reference row.
ORDER = list(METHODS)
NAMES = {name: spec.label for name, spec in METHODS.items()} | {"real": "Real (held-out test)"}
PAPER = "MS-SSIM: VAE 0.0485, DCGAN 0.0522, WGAN 0.0567, Ours 0.0694; FID: DCGAN 15.2, WGAN 27.5, Ours 52.8"

COLUMNS = [
    "Method",
    "MS-SSIM",
    "FID ↓",
    "KID ×10³ ↓",
    "SWD ×10³ ↓",
    "nearest-train MS-SSIM",
    "train time (s)",
    "samples/s",
]


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _num(value, fmt: str) -> str:
    return "–" if _missing(value) else format(float(value), fmt)


def _n(row) -> str:
    return f"(N={int(row['n_images'])}/{int(row['n_test'])})"


def _row(row: pd.Series) -> list[str]:
    status = row.get("fid_status")
    if status == "ok":
        fid = f"{row['fid']:.1f} {_n(row)}"
        kid = f"{1e3 * row['kid']:.2f} ± {1e3 * row['kid_std']:.2f} (N={int(row['kid_subset_size'])})"
    else:
        fid = kid = str(status)
    return [
        NAMES.get(row["method"], row["method"]),
        f"{row['msssim']:.4f}",
        fid,
        kid,
        f"{row['swd']:.1f} {_n(row)}",
        f"{row['nearest_train_msssim']:.4f}",
        _num(row.get("train_seconds"), ".0f"),
        _num(row.get("samples_per_second"), ".0f"),
    ]


def order(methods: list[str]) -> list[str]:
    """``methods`` in the table's row order: registered methods first, then any other, then ``real``."""
    known = [m for m in ORDER if m in methods]
    return known + [m for m in methods if m not in ORDER and m != "real"] + (["real"] if "real" in methods else [])


def render(df: pd.DataFrame, meta: dict) -> str:
    """The Markdown table and its notes.

    Params:
        df: metrics.csv as a DataFrame (one row per method plus ``real``).
        meta: ``size`` (px), ``n_train``, ``n_test``, ``msssim`` (scales, window, sigma),
            ``swd`` (levels, patches, projections, patch size), ``fid_status``, ``weights_path``.
    Returns:
        Markdown text.
    """
    methods = list(df["method"])
    rows = [_row(df[df["method"] == m].iloc[0]) for m in order(methods)]
    lines = [
        "# Evaluation: generated vs held-out real positron images",
        "",
        f"Measured on this pipeline's simulated positron images ({meta['size']}x{meta['size']} px; "
        f"{meta['n_test']} held-out test images, {meta['n_train']} training images). "
        "The paper's Table 1 comes from its own (unpublished) data and is not comparable: " + PAPER + ".",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "| --- | " + " | ".join("---:" for _ in COLUMNS[1:]) + " |",
    ]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    ms, sw = meta["msssim"], meta["swd"]
    lines += [
        "",
        (
            "- **MS-SSIM**: mean over random pairs of distinct images of one set (diversity; lower is more "
            "diverse); a generator should come close to the real test set's own value (last row). "
            f"{ms['scales']} scales, {ms['window']}-tap Gaussian window (sigma {ms['sigma']}), Wang et al.'s "
            "first weights renormalised (pytorch-msssim's 5 scales need images > 160 px)."
        ),
        (
            "- **FID / KID**: Inception-v3 pool features (pytorch-fid), grey replicated to 3 channels; KID is the "
            "unbiased MMD² with the cubic polynomial kernel, mean ± std over random subsets of N images. "
            "N = generated / real test images; FID is biased upwards at small N."
        ),
        (
            f"- **SWD**: sliced Wasserstein distance of {sw['patch_size']}x{sw['patch_size']} Laplacian-pyramid "
            f"patches (Karras et al. 2017), mean over levels {sw['levels']} px, {sw['patches']} patches per level "
            f"and set, {sw['projections']} projections."
        ),
        (
            "- **nearest-train MS-SSIM**: for each image, the highest MS-SSIM against any training image, averaged "
            "(memorisation: near 1 means copies of the training set; compare with the real test images' value)."
        ),
        (
            "- **Real (held-out test)**: MS-SSIM and nearest-train MS-SSIM of the test images themselves; its "
            "distances compare the training images with the test images, the floor a generator of the training "
            "distribution can reach at this N."
        ),
    ]
    if meta["fid_status"] != "ok":
        lines.append(
            f"- FID and KID are {meta['fid_status']}: put the weights file at `{meta['weights_path']}` "
            "and rerun the evaluation (`snakemake --forcerun evaluate_methods`)."
        )
    return "\n".join(lines) + "\n"
