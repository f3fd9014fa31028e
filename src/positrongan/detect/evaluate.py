"""The downstream detection study on the held-out scans (issue 17 item 3).

Conditions: reference-count slices (``images``, fraction 1), raw short-scan twins
(``low_count[:, j]``) and twins enhanced by each method and seed (the enhance contract:
``enhance/{method}/seed{seed}.npz`` with ``enhanced`` (N, F, S, S), ``index`` (N,) dataset rows,
``fractions`` (F,)).

Per condition and defect type t:

- positives: test slices whose truth contains type t; negatives: defect-free test slices
  (slices with only other types are left out, so a type's AUC is not mixed with how the
  detector sees the other types);
- AUC of the type's score (Mann-Whitney, ties 1/2), and ``auc_within``: the same with the
  negatives restricted to the scans holding the positives. With two test scans a type's
  positives often all come from one scan, and the plain AUC then also measures how the
  detector's score differs between scans; the within-scan AUC does not;
- sensitivity at the detector's fixed threshold for t, chosen once at reference counts on the
  validation scans' defect-free slices to flag at most ``detection.fp_rate`` of them, and the
  false-positive rate that threshold gives on the test negatives (the hallucination check);
- Dice of the predicted type-t mask with the truth, averaged over the positive slices.

"any" pools the types: its score is the largest type score; it flags a slice when any type
exceeds its threshold (its false-positive rate is the fraction of defect-free slices where the
detector reports some defect).

Headline: per defect type that the detector finds at reference counts (test AUC at least
``detection.min_reference_auc``), the scan-time factor 1/f* at which each condition's AUC comes
within ``detection.match_tolerance`` of the reference images' AUC, interpolated linearly in
log f between measured fractions. A type the detector misses at full counts has no factor: no
enhancement can be judged on it.
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

import numpy as np

from ..errors import ArtifactError
from ..io import atomic_path, load_npz, write_text
from .infer import detector_probabilities, scores_from_probabilities
from .scoring import dice, positive_rate, roc_auc

log = logging.getLogger(__name__)

COLUMNS = (
    "condition",
    "seed",
    "fraction",
    "type",
    "n_pos",
    "n_neg",
    "auc",
    "n_neg_within",
    "auc_within",
    "threshold",
    "sensitivity",
    "fp_rate",
    "dice",
    "n_dice",
)
_ENHANCED = re.compile(r"^seed(\d+)\.npz$")


def score_condition(
    model, images: np.ndarray, labels: np.ndarray, thresholds: np.ndarray, scans: np.ndarray | None = None
) -> list[dict]:
    """Per-type (and "any") detection metrics of one condition.

    Params:
        model: the detector.
        images: (N, S, S) slices of the condition.
        labels: (N, S, S) their truth type labels.
        thresholds: (T,) per-type thresholds (flag when score > threshold).
        scans: (N,) scan id of each slice, for the within-scan AUC (None: all one scan).
    Returns:
        One dict per type and one for "any", with the metric columns of ``COLUMNS``.
    """
    prob = detector_probabilities(model, images)
    scores = scores_from_probabilities(prob, model.topk)
    masks = prob.argmax(1)
    flat = labels.reshape(len(labels), -1)
    free = ~(flat > 0).any(1)
    scans = np.zeros(len(images)) if scans is None else np.asarray(scans)
    rows = []
    for t, name in enumerate(model.types):
        pos = (flat == t + 1).any(1)
        within = free & np.isin(scans, scans[pos])
        dices = [dice(masks[i] == t + 1, labels[i] == t + 1) for i in np.flatnonzero(pos)]
        rows.append(
            {
                "type": name,
                "n_pos": int(pos.sum()),
                "n_neg": int(free.sum()),
                "auc": roc_auc(scores[pos, t], scores[free, t]),
                "n_neg_within": int(within.sum()),
                "auc_within": roc_auc(scores[pos, t], scores[within, t]),
                "threshold": float(thresholds[t]),
                "sensitivity": positive_rate(scores[pos, t], thresholds[t]),
                "fp_rate": positive_rate(scores[free, t], thresholds[t]),
                "dice": float(np.mean(dices)) if dices else float("nan"),
                "n_dice": len(dices),
            }
        )
    flagged = (scores > thresholds[None, :]).any(1)
    top = scores.max(1)
    rows.append(
        {
            "type": "any",
            "n_pos": int((~free).sum()),
            "n_neg": int(free.sum()),
            "auc": roc_auc(top[~free], top[free]),
            "n_neg_within": int((free & np.isin(scans, scans[~free])).sum()),
            "auc_within": roc_auc(top[~free], top[free & np.isin(scans, scans[~free])]),
            "threshold": float("nan"),
            "sensitivity": float(flagged[~free].mean()) if (~free).any() else float("nan"),
            "fp_rate": float(flagged[free].mean()) if free.any() else float("nan"),
            "dice": float("nan"),
            "n_dice": 0,
        }
    )
    return rows


def parse_enhanced_path(path: str | Path) -> tuple[str, int]:
    """(method, seed) of ``.../enhance/{method}/seed{seed}.npz``."""
    path = Path(path)
    match = _ENHANCED.match(path.name)
    if not match:
        raise ArtifactError(f"{path}: expected an enhanced file named enhance/{{method}}/seed{{seed}}.npz")
    return path.parent.name, int(match.group(1))


def load_enhanced(path: str | Path, dataset: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read and check one enhance-contract file against the dataset.

    Returns:
        (enhanced (N, F, S, S) float32, index (N,) int64 dataset rows, fractions (F,) float64).
    Raises:
        ArtifactError: naming the file, for a missing key, a shape mismatch, or rows that are
            outside the dataset or not in its test split.
    """
    data = load_npz(path, ("enhanced", "index", "fractions"))
    enh = np.asarray(data["enhanced"], np.float32)
    index = np.asarray(data["index"], np.int64).ravel()
    fractions = np.asarray(data["fractions"], np.float64).ravel()
    size = dataset["images"].shape[-1]
    if enh.ndim != 4 or enh.shape[0] != len(index) or enh.shape[1] != len(fractions) or enh.shape[2:] != (size, size):
        raise ArtifactError(
            f"{path}: 'enhanced' has shape {enh.shape}; expected (len(index)={len(index)}, "
            f"len(fractions)={len(fractions)}, {size}, {size})"
        )
    n = len(dataset["images"])
    if len(index) == 0 or index.min() < 0 or index.max() >= n:
        raise ArtifactError(f"{path}: 'index' must hold row numbers of the dataset's {n} slices")
    split = dataset["split"][index]
    if (split != "test").any():
        raise ArtifactError(f"{path}: {int((split != 'test').sum())} rows of 'index' are not test slices")
    if not np.isfinite(enh).all():
        raise ArtifactError(f"{path}: 'enhanced' holds NaN or infinite values")
    return enh, index, fractions


def run_detection_study(
    model,
    dataset: dict,
    thresholds: np.ndarray,
    enhanced: list[str | Path] = (),
) -> list[dict]:
    """Score every condition on the test split.

    Params:
        model: the detector.
        dataset: the dataset arrays (``images``, ``defect_labels``, ``split``; ``low_count`` and
            ``low_count_fractions`` when present).
        thresholds: (T,) per-type thresholds.
        enhanced: enhance-contract files.
    Returns:
        Rows with every column of ``COLUMNS``.
    """
    test = np.flatnonzero(dataset["split"] == "test")
    if len(test) == 0:
        raise ArtifactError("the dataset has no test slices to evaluate the detector on")
    labels = dataset["defect_labels"]
    scans = dataset["scan"] if "scan" in dataset else np.zeros(len(labels))
    rows: list[dict] = []

    def add(condition, seed, fraction, images, lab, rows_idx):
        for r in score_condition(model, images, lab, thresholds, scans[rows_idx]):
            rows.append({"condition": condition, "seed": seed, "fraction": float(fraction), **r})

    add("reference", "", 1.0, dataset["images"][test], labels[test], test)
    fractions = [float(f) for f in dataset.get("low_count_fractions", np.zeros(0))]
    for j, f in enumerate(fractions):
        add("raw", "", f, dataset["low_count"][test, j], labels[test], test)
    for path in enhanced:
        method, seed = parse_enhanced_path(path)
        enh, index, fr = load_enhanced(path, dataset)
        for j, f in enumerate(fr):
            add(method, seed, f, enh[:, j], labels[index], index)
        log.info("scored %s seed %d: %d slices at fractions %s", method, seed, len(index), list(fr))
    return rows


def write_csv(path: str | Path, rows: list[dict]) -> None:
    """Write the study's rows (``COLUMNS``) atomically; floats with 6 significant digits."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def curves(rows: list[dict], metric: str, type_name: str) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """condition -> (fractions ascending, mean over seeds, (min, max) spread over seeds) of one metric.

    The raw curve ends with the reference point at fraction 1 (raw images at full counts are the
    reference images); enhanced curves hold only their measured fractions.
    """
    out = {}
    ref = [r[metric] for r in rows if r["condition"] == "reference" and r["type"] == type_name]
    conds = [c for c in dict.fromkeys(r["condition"] for r in rows) if c != "reference"]
    for cond in conds:
        sel = [r for r in rows if r["condition"] == cond and r["type"] == type_name]
        fr = sorted({r["fraction"] for r in sel})
        vals = [np.array([r[metric] for r in sel if r["fraction"] == f], float) for f in fr]
        mean = [float(np.mean(v)) for v in vals]
        lo = [float(np.min(v)) for v in vals]
        hi = [float(np.max(v)) for v in vals]
        if cond == "raw" and ref:
            fr, mean, lo, hi = fr + [1.0], mean + ref, lo + ref, hi + ref
        out[cond] = (np.array(fr), np.array(mean), np.array([lo, hi]))
    return out


def matching_factor(fractions: np.ndarray, values: np.ndarray, target: float) -> tuple[float | None, str]:
    """The scan-time factor 1/f* at which a curve first reaches ``target``, going down in f.

    f* is the smallest fraction with value >= target, interpolated linearly in log f between
    the measured point that reaches it and the next lower one that does not.

    Params:
        fractions: (K,) ascending fractions.
        values: (K,) the metric at each.
        target: the value to reach.
    Returns:
        (factor or None, text): "not reached" when no measured point reaches the target;
        ">= X" when even the smallest fraction does.
    """
    ok = values >= target
    if not ok.any():
        return None, "not reached"
    if ok[0]:
        return 1.0 / fractions[0], f">= {1.0 / fractions[0]:.3g}x (reached at the shortest scan measured)"
    # The lowest fraction reaching the target and the point below it that does not.
    i = int(np.flatnonzero(ok)[0])
    x0, x1 = np.log(fractions[i - 1]), np.log(fractions[i])
    y0, y1 = values[i - 1], values[i]
    x = x1 if y1 == y0 else x0 + (target - y0) * (x1 - x0) / (y1 - y0)
    f = float(np.exp(x))
    return 1.0 / f, f"{1.0 / f:.3g}x (f* = {f:.3g})"


def headline_table(rows: list[dict], tolerance: float, fp_rate: float, min_reference_auc: float) -> str:
    """Markdown: the scan-time factor per condition and detectable type, then every number with its N."""
    ref = {r["type"]: r for r in rows if r["condition"] == "reference"}
    types = [t for t in ref if t != "any" and ref[t]["n_pos"] > 0]
    detectable = [t for t in types if ref[t]["auc"] >= min_reference_auc]
    conds = [c for c in dict.fromkeys(r["condition"] for r in rows) if c != "reference"]
    lines = [
        "# Downstream defect detection on the held-out scans",
        "",
        f"Detector trained on reference-count training slices only. Per-type thresholds flag at most "
        f"{fp_rate:.0%} of the validation scans' defect-free slices at reference counts. AUC: slices "
        "with the type against defect-free slices. Sensitivity and FP rate at that threshold; FP = "
        "detections in defect-free test slices (hallucinations). AUC within scan: negatives only from "
        "the scans holding the positives. Dice: mean over the positive slices. "
        "Enhanced rows: mean over seeds (min-max in brackets where there are several).",
        "",
        "## Headline: scan-time factor matching full-count detection",
        "",
        f"Per defect type the detector finds at reference counts (test AUC >= {min_reference_auc:g}): "
        "the factor 1/f*, f* the smallest count fraction at which the condition's AUC reaches the "
        f"reference images' AUC minus {tolerance:g} (linear in log f between measured fractions; "
        "raw includes the reference itself at f = 1).",
        "",
    ]
    skipped = [f"{t} (AUC {ref[t]['auc']:.3f})" for t in types if t not in detectable]
    if skipped:
        lines += [f"Not detected at reference counts, so no factor: {', '.join(skipped)}.", ""]
    absent = [t for t in ref if t != "any" and ref[t]["n_pos"] == 0]
    if absent:
        lines += [f"No test slice holds: {', '.join(absent)}.", ""]
    if detectable:
        lines += [
            "| condition | "
            + " | ".join(f"{t} (N pos {ref[t]['n_pos']}, target {ref[t]['auc'] - tolerance:.3f})" for t in detectable)
            + " |",
            "|---|" + "---|" * len(detectable),
        ]
        for cond in conds:
            cells = []
            for t in detectable:
                fr, mean, _ = curves(rows, "auc", t)[cond]
                _, text = matching_factor(fr, mean, ref[t]["auc"] - tolerance)
                per = ", ".join(f"{f:g}: {v:.3f}" for f, v in zip(fr, mean))
                cells.append(f"{text} [{per}]")
            lines.append(f"| {cond} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Per type",
        "",
        "| condition | fraction | type | N pos | N neg | AUC | AUC within scan (N neg) | sensitivity | FP rate "
        "| Dice (N) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = list(dict.fromkeys((r["condition"], r["fraction"], r["type"]) for r in rows))
    for cond, f, t in keys:
        sel = [r for r in rows if (r["condition"], r["fraction"], r["type"]) == (cond, f, t)]

        def fmt(col, sel=sel):
            v = np.array([r[col] for r in sel], float)
            if np.isnan(v).all():
                return "n/a"
            s = f"{np.nanmean(v):.3f}"
            return s + (f" [{np.nanmin(v):.3f}-{np.nanmax(v):.3f}]" if len(v) > 1 else "")

        r0 = sel[0]
        d = "n/a" if r0["n_dice"] == 0 else f"{fmt('dice')} ({r0['n_dice']})"
        lines.append(
            f"| {cond} | {f:g} | {t} | {r0['n_pos']} | {r0['n_neg']} | {fmt('auc')} | "
            f"{fmt('auc_within')} ({r0['n_neg_within']}) | {fmt('sensitivity')} | {fmt('fp_rate')} | {d} |"
        )
    return "\n".join(lines) + "\n"


def plot(path: str | Path, rows: list[dict], title: str) -> None:
    """AUC and sensitivity against the count fraction, one panel per type, one line per condition."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    types = list(dict.fromkeys(r["type"] for r in rows if r["condition"] == "reference"))
    fig, axes = plt.subplots(2, len(types), figsize=(3.2 * len(types), 6.0), sharex=True, squeeze=False)
    ref = {r["type"]: r for r in rows if r["condition"] == "reference"}
    for j, t in enumerate(types):
        for i, metric in enumerate(("auc", "sensitivity")):
            ax = axes[i, j]
            for k, (cond, (fr, mean, spread)) in enumerate(curves(rows, metric, t).items()):
                style = {"color": "k", "marker": "o"} if cond == "raw" else {"color": f"C{k}", "marker": "s"}
                ax.plot(fr, mean, label=cond, **style)
                if spread.shape[1] and (spread[1] > spread[0]).any():
                    ax.fill_between(fr, spread[0], spread[1], color=style["color"], alpha=0.15)
                if metric == "sensitivity":
                    # Beside it the FP rate on defect-free slices: at low counts a reader trained on
                    # full counts flags nearly everything, and sensitivity alone would hide that.
                    ffr, fmean, _ = curves(rows, "fp_rate", t)[cond]
                    ax.plot(ffr, fmean, color=style["color"], ls=":", marker=style["marker"], mfc="none")
                if cond != "raw" and len(fr) and np.isfinite(ref[t][metric]):
                    # Dashed: from the method's largest fraction to the reference at full counts.
                    ax.plot([fr[-1], 1.0], [mean[-1], ref[t][metric]], color=style["color"], ls="--", lw=0.8)
            ax.plot([1.0], [ref[t][metric]], marker="*", color="k", ms=10, ls="none")
            if metric == "sensitivity":
                ax.plot([1.0], [ref[t]["fp_rate"]], marker="*", color="k", mfc="none", ms=10, ls="none")
            ax.set_xscale("log")
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            if i == 0:
                n = ref[t]["n_pos"]
                ax.set_title(f"{t} (N pos={n}, N neg={ref[t]['n_neg']})" if n else f"{t}: no test slices")
                ax.axhline(0.5, color="grey", lw=0.5)
            else:
                ax.set_xlabel("fraction of counts (scan time)")
            if j == 0:
                ax.set_ylabel("AUC" if i == 0 else "sensitivity (solid), FP rate (dotted)")
    axes[0, 0].legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def write_table(path: str | Path, rows: list[dict], tolerance: float, fp_rate: float, min_reference_auc: float) -> None:
    """Write :func:`headline_table` atomically."""
    write_text(path, headline_table(rows, tolerance, fp_rate, min_reference_auc))
