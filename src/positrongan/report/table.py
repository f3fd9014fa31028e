"""metrics.csv -> table.md, laid out like the paper's Table 1 (METHOD, MS-SSIM, FID) with our
extra columns: KID, SWD, C2ST, memorisation, training time and sampling speed, N beside every
distance. metrics.csv holds one row per (method, training seed); the table shows per method the
mean and the 95 % Student-t interval over the seeds (one seed: the single value, n=1)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from ..train.registry import METHODS

# Row order and names come from the method registry (the paper's Table 1 order), then the
# real reference row.
ORDER = list(METHODS)
FLOORS = ["real", "real_split"]
NAMES = {name: spec.label for name, spec in METHODS.items()} | {
    "real": "Real floor: train vs held-out",
    "real_split": "Real floor: held-out split-half",
}
PAPER = "MS-SSIM: VAE 0.0485, DCGAN 0.0522, WGAN 0.0567, Ours 0.0694; FID: DCGAN 15.2, WGAN 27.5, Ours 52.8"

COLUMNS = [
    "Method",
    "MS-SSIM",
    "FID ↓",
    "KID ×10³ ↓",
    "SWD ×10³ ↓",
    "C2ST acc. (0.5 best)",
    "nearest-train MS-SSIM",
    "train time (s)",
    "samples/s",
    "seeds",
]


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def mean_ci(values) -> tuple[float, float | None, int]:
    """Mean and half-width of the two-sided 95 % Student-t interval of the mean.

    Params:
        values: one value per seed (missing ones are dropped).
    Returns:
        (mean, half-width or None with fewer than 2 values, n). NaN mean when no value.
    """
    v = np.array([float(x) for x in values if not _missing(x)], dtype=np.float64)
    if len(v) == 0:
        return math.nan, None, 0
    if len(v) == 1:
        return float(v[0]), None, 1
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return float(v.mean()), half, len(v)


def _stat(rows: pd.DataFrame, column: str, fmt: str, scale: float = 1.0) -> str:
    if column not in rows:
        return "–"
    mean, half, n = mean_ci(rows[column] * scale if rows[column].dtype != object else rows[column])
    if n == 0:
        return "–"
    return format(mean, fmt) if half is None else f"{format(mean, fmt)} ± {format(half, fmt)}"


def _n(rows: pd.DataFrame, images: str = "n_images", ref: str = "n_test") -> str:
    first = rows.iloc[0]
    if _missing(first.get(images)):
        return ""
    return f" (N={int(first[images])}/{int(first[ref])})"


def _row(rows: pd.DataFrame, names: dict[str, str]) -> list[str]:
    """One method's cells from its rows (one per seed)."""
    first = rows.iloc[0]
    status = first.get("fid_status")
    if status == "ok":
        fid = _stat(rows, "fid", ".1f") + _n(rows)
        if len(rows) == 1:
            kid = f"{1e3 * first['kid']:.2f} ± {1e3 * first['kid_std']:.2f} (N={int(first['kid_subset_size'])})"
        else:
            kid = _stat(rows, "kid", ".2f", 1e3) + f" (N={int(first['kid_subset_size'])})"
    else:
        fid = kid = "–" if _missing(status) else str(status)
    c2st = _stat(rows, "c2st", ".3f")
    if "c2st_n" in rows and not _missing(first.get("c2st_n")):
        c2st += f" (N={int(first['c2st_n'])}+{int(first['c2st_n'])})"
    return [
        names.get(first["method"], first["method"]),
        _stat(rows, "msssim", ".4f"),
        fid,
        kid,
        _stat(rows, "swd", ".1f") + _n(rows),
        c2st,
        _stat(rows, "nearest_train_msssim", ".4f"),
        _stat(rows, "train_seconds", ".0f"),
        _stat(rows, "samples_per_second", ".0f"),
        f"n={len(rows)}",
    ]


def _int_cell(rows: pd.DataFrame, column: str) -> str:
    if column not in rows or rows[column].isna().all():
        return "–"
    values = sorted({int(v) for v in rows[column].dropna()})
    return " / ".join(f"{v:,}" for v in values)


def capacity_table(df: pd.DataFrame, names: dict[str, str], methods: list[str]) -> list[str]:
    """Markdown lines of the capacity and budget table: trainable parameters of G (with W_a for
    ours) and D, training images, real images seen by the discriminator, wall time."""
    lines = [
        "| Method | G parameters | D parameters | training images | real images seen by D | train time (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in methods:
        rows = df[df["method"] == m]
        if m in FLOORS or rows.empty:
            continue
        lines.append(
            f"| {names.get(m, m)} | {_int_cell(rows, 'g_params')} | {_int_cell(rows, 'd_params')} | "
            f"{_int_cell(rows, 'n_train_images')} | {_int_cell(rows, 'real_images_seen')} | "
            f"{_stat(rows, 'train_seconds', '.0f')} |"
        )
    return lines


def attention_table(df: pd.DataFrame, names: dict[str, str], methods: list[str]) -> list[str]:
    """Markdown lines of the attention table (rows that report it), or none."""
    if "attention_slots" not in df:
        return []
    lines = [
        "| Method | effective slots exp(H(a)) | of M slots | mean largest weight "
        "| W_a change ‖ΔW_a‖/‖W_a(0)‖ | seeds |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in methods:
        rows = df[df["method"] == m]
        if rows.empty or rows["attention_slots"].isna().all():
            continue
        lines.append(
            f"| {names.get(m, m)} | {_stat(rows, 'attention_slots', '.1f')} | {_int_cell(rows, 'memory_slots')} | "
            f"{_stat(rows, 'attention_max', '.3f')} | {_stat(rows, 'wa_change', '.2f')} | n={len(rows)} |"
        )
    return lines if len(lines) > 2 else []


def domain_table(df: pd.DataFrame, names: dict[str, str], methods: list[str]) -> list[str]:
    """Markdown lines of the detector-feature table (when the evaluation had the detector)."""
    if "det_fd" not in df:
        return []
    types = [c.removeprefix("defect_") for c in df.columns if c.startswith("defect_") and not c.endswith("_ref")]
    lines = [
        "| Method | detector FD ↓ | detector KID ×10³ ↓ | precision | recall | "
        + " | ".join(f"{t} found (real)" for t in types)
        + " |",
        "| --- | " + " | ".join("---:" for _ in range(4 + len(types))) + " |",
    ]
    for m in methods:
        rows = df[df["method"] == m]
        if rows.empty or rows["det_fd"].isna().all():
            continue
        cells = [
            names.get(m, m),
            # General format: the detector's feature scale is its own (values can be ~1e-3).
            _stat(rows, "det_fd", ".3g") + _n(rows),
            _stat(rows, "det_kid", ".3g", 1e3),
            _stat(rows, "det_precision", ".3f"),
            _stat(rows, "det_recall", ".3f"),
        ]
        cells += [f"{_stat(rows, f'defect_{t}', '.3f')} ({_stat(rows, f'defect_{t}_ref', '.3f')})" for t in types]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def order(methods: list[str]) -> list[str]:
    """``methods`` in the table's row order: registered methods first, then any other (the
    variants, in their order), then the real floors."""
    known = [m for m in ORDER if m in methods]
    return known + [m for m in methods if m not in ORDER and m not in FLOORS] + [f for f in FLOORS if f in methods]


def render(df: pd.DataFrame, meta: dict) -> str:
    """The Markdown table and its notes.

    Params:
        df: metrics.csv as a DataFrame (one row per method and seed, plus the floors ``real``
            and ``real_split``; a frame without a ``seed`` column is one seed).
        meta: ``size`` (px), ``n_train``, ``n_test``, ``msssim`` (scales, window, sigma),
            ``swd`` (levels, patches, projections, patch size), ``fid_status``, ``weights_path``;
            optionally ``labels`` (method -> row label, for the variants) and ``c2st_epochs``.
    Returns:
        Markdown text.
    """
    methods = list(dict.fromkeys(df["method"]))
    names = {**NAMES, **meta.get("labels", {})}
    rows = [_row(df[df["method"] == m], names) for m in order(methods)]
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
    ordered = order(methods)
    extra = [
        "",
        "## Capacity and budget",
        "",
        f"Every method trains on the same budget: {meta.get('budget', 'see training.budget')}. "
        "Parameters are the trainable ones (G includes W_a and, when trained, the memory and the CT encoder; "
        "FastGAN's D includes its decoders). Several values in a cell: they differ between seeds.",
        "",
        *capacity_table(df, names, ordered),
    ]
    dom = domain_table(df, names, ordered)
    if dom:
        extra += [
            "",
            "## Detector features",
            "",
            "Distances in the feature space of the defect detector (results/detect/detector.pt, trained on the "
            "training split only; not Inception, so not FID): Fréchet distance and KID (cubic kernel, mean over "
            "50 subsets) of its pooled bottleneck features against the held-out images, improved precision and "
            "recall (Kynkäänniemi et al. 2019, k = 3), and per defect type the fraction of images in which the "
            "detector finds it at its validation thresholds, with the reference set's fraction in brackets.",
            "",
            *dom,
        ]
    att = attention_table(df, names, ordered)
    if att:
        extra += [
            "",
            "## Attention",
            "",
            "exp of the entropy of the attention weights a over the memory slots, averaged over 256 queries "
            "drawn as in training (M = uniform attention, 1 = one slot per query); mean ± 95 % t-interval over seeds.",
            "",
            *att,
        ]
    ms, sw = meta["msssim"], meta["swd"]
    lines += [
        "",
        (
            "- **Seeds**: each method is trained once per seed (`seeds` column, n); a cell is the mean and, "
            "for n > 1, ± the half-width of the 95 % Student-t interval of the mean over the seeds (a single "
            "value when n = 1: no interval can be given). The real floors are repeated per seed with the "
            "metrics' own random draws, so their spread is the metrics' sampling noise."
        ),
        (
            "- **MS-SSIM**: mean over random pairs of distinct images of one set (diversity; lower is more "
            "diverse); a generator should come close to the real test set's own value (row 'Real floor: "
            "train vs held-out'). "
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
            f"and set, {sw['projections']} projections (one set of projections for every row)."
        ),
        (
            "- **nearest-train MS-SSIM**: for each image, the highest MS-SSIM against any training image, averaged "
            "(memorisation: near 1 means copies of the training set; compare with the real test images' value)."
        ),
        (
            "- **C2ST**: held-out accuracy of a small CNN (3 strided conv layers) telling the samples from the "
            f"real reference, trained {meta.get('c2st_epochs', '?')} epochs on one half of N+N images and "
            "scored on the other, both ways (0.5 = indistinguishable, 1 = every image gives itself away)."
        ),
        (
            "- **Real floor: train vs held-out**: MS-SSIM and nearest-train MS-SSIM of the test images themselves; "
            "its distances compare the training images with the test images, the floor a generator of the "
            "training distribution can reach at this N. **Real floor: held-out split-half**: one half of the "
            "held-out scans against the other (N = the two halves)."
        ),
    ]
    if meta["fid_status"] != "ok":
        lines.append(
            f"- FID and KID are {meta['fid_status']}: put the weights file at `{meta['weights_path']}` "
            "and rerun the evaluation (`snakemake --forcerun evaluate_methods`)."
        )
    return "\n".join(lines + extra) + "\n"
