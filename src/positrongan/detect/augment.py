"""Augmentation utility (issue 17 item 4): do generated labelled slices help the detector when
real labelled slices are scarce?

For each seed and each N in ``real_counts``:

1. **Real subset**: N training slices drawn at random, stratified so that every defect type
   present in the training split appears at least once (:func:`stratified_subset`).
2. **Generator**: the mask-conditioned generator (``detect.conditional``) trained on those N
   slices only (their images, truth and labels), so the augmented detector sees no labelled
   real image beyond the N: the generator cannot leak the rest of the training split.
3. **Synthetic slices**: ``synthetic_factor`` x N images generated from the truth and label maps
   of the OTHER training slices (never their images), each in a random dihedral orientation
   and with its own noise draw; a map is reused (in another orientation, with other noise)
   only when the pool is smaller than the count. These maps are what the phantom generator
   makes for a new scan (the training scans' phantoms come from it), so they stand for drawn
   or generated phantoms, not for more labelled images.
4. **Two detectors** with the same seed and the same number of optimiser steps (``steps``):
   on the N real slices alone (``real``) and on the N real + synthetic slices
   (``real+synthetic``). Equal steps, not equal epochs: the augmented detector must not win
   merely by training longer. Both are selected on the validation scans and get per-type
   thresholds at ``detection.fp_rate`` on the validation scans' defect-free slices.
5. **Scoring** on the test scans' reference images with ``evaluate.score_condition``: per-type
   AUC (type-t slices against defect-free slices), AUC within scan, sensitivity and FP rate at
   the threshold, Dice.

:func:`summarise` gives mean and 95 % Student-t interval over seeds (``report.table.mean_ci``)
and the paired difference augmented minus real (same subset, same detector seed).
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import numpy as np
import torch

from ..io import atomic_path, write_text
from ..report.table import mean_ci
from .conditional import generate, settings_of, texture_ratio, train_conditional
from .evaluate import score_condition
from .train import TYPES, _dihedral, fit_thresholds, settings_of as detector_settings, train_detector

log = logging.getLogger(__name__)

CONDITIONS = ("real", "real+synthetic")
COLUMNS = (
    "seed",
    "n_real",
    "n_synthetic",
    "condition",
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
    "steps",
    "chosen_epoch",
    "val_mean_auc",
    "generator_texture_ratio",
    "generator_val_l1",
)


def stratified_subset(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """N slice indices drawn at random, with every defect type present in ``labels`` at least once.

    Params:
        labels: (M, S, S) defect labels of the candidate slices.
        n: how many to draw (at most M).
        rng: the random stream.
    Returns:
        (n,) sorted indices into ``labels``.
    Raises:
        ValueError: n larger than M.
    """
    m = len(labels)
    if n > m:
        raise ValueError(f"cannot draw {n} real slices from {m} training slices")
    flat = np.asarray(labels).reshape(m, -1)
    chosen: list[int] = []
    types = [t for t in range(1, int(flat.max(initial=0)) + 1) if (flat == t).any()]
    for t in rng.permutation(types):
        if len(chosen) >= n:
            break
        if any((flat[i] == t).any() for i in chosen):
            continue
        holders = np.flatnonzero((flat == t).any(1))
        chosen.append(int(rng.choice(holders)))
    rest = np.setdiff1d(np.arange(m), chosen)
    chosen += rng.choice(rest, size=n - len(chosen), replace=False).tolist()
    return np.sort(np.array(chosen, np.int64))


def synthetic_maps(
    truth: np.ndarray, labels: np.ndarray, pool: np.ndarray, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` (truth, labels) maps from the ``pool`` slices, each in a random dihedral orientation.

    The pool is drawn without replacement while it lasts, then again (a reused map comes in its
    own orientation and, when generated, with its own noise).
    """
    if len(pool) == 0:
        raise ValueError("no training slice is left outside the real subset to draw synthetic maps from")
    picks = np.concatenate([rng.permutation(pool) for _ in range(math.ceil(count / len(pool)))])[:count]
    t = torch.from_numpy(np.asarray(truth[picks], np.float32))
    lab = torch.from_numpy(np.asarray(labels[picks], np.int64))
    ks = rng.integers(8, size=count)
    t_out = torch.stack([_dihedral(t[i], int(k)) for i, k in enumerate(ks)]) if count else t
    l_out = torch.stack([_dihedral(lab[i], int(k)) for i, k in enumerate(ks)]) if count else lab
    return t_out.numpy(), l_out.numpy().astype(np.uint8)


def _epochs_for(steps: int, n: int, batch_size: int) -> int:
    """Epochs giving at least ``steps`` optimiser steps over ``n`` slices."""
    return max(1, math.ceil(steps / math.ceil(n / batch_size)))


def _train_scored(images, labels, data, val, test, dcfg, acfg, seed) -> tuple[list[dict], dict]:
    epochs = _epochs_for(acfg["steps"], len(images), dcfg["batch_size"])
    model, meta = train_detector(
        images,
        labels,
        data["images"][val] if val.any() else None,
        data["defect_labels"][val] if val.any() else None,
        epochs=epochs,
        **detector_settings(dcfg),
        seed=seed,
        # About as many validation scores as the default detector's 30 epochs give.
        val_every=max(1, math.ceil(epochs / dcfg["epochs"])),
    )
    labels_all = data["defect_labels"]
    free_val = val & ~(labels_all.reshape(len(labels_all), -1) > 0).any(1)
    # Without a defect-free validation slice the thresholds come from the detector's own
    # training slices (optimistic), as in train-detector.
    if free_val.any():
        thresholds = fit_thresholds(model, data["images"][val], labels_all[val], dcfg["fp_rate"])
    else:
        thresholds = fit_thresholds(model, images, labels, dcfg["fp_rate"])
    scans = data["scan"][test] if "scan" in data else None
    rows = score_condition(model, data["images"][test], labels_all[test], thresholds, scans)
    steps = epochs * math.ceil(len(images) / dcfg["batch_size"])
    return rows, {"steps": steps, "chosen_epoch": meta["chosen_epoch"], "val_mean_auc": meta["val_mean_auc"]}


def run_augmentation_study(data: dict, dcfg: dict, seed_of) -> list[dict]:
    """The study's rows (``COLUMNS``): every seed x N x condition x type (and "any").

    Params:
        data: dataset arrays (``images``, ``truth``, ``defect_labels``, ``split``; ``scan``).
        dcfg: the ``detection`` config section (its ``augmentation`` and ``conditional``
            subsections included).
        seed_of: callable (*names) -> int, the derived seed of a named stream.
    Returns:
        The rows.
    """
    acfg, gcfg = dcfg["augmentation"], dcfg["conditional"]
    split = data["split"]
    train = np.flatnonzero(split == "train")
    val, test = split == "val", np.flatnonzero(split == "test")
    if len(test) == 0:
        raise ValueError("the dataset has no test slices to score the detectors on")
    labels = data["defect_labels"]
    rows: list[dict] = []
    for seed in acfg["seeds"]:
        for n in acfg["real_counts"]:
            rng = np.random.default_rng(seed_of("subset", seed, n))
            real = train[stratified_subset(labels[train], n, rng)]
            det_seed = seed_of("detector", seed, n)
            fit = train_conditional(
                data["images"][real],
                data["truth"][real],
                labels[real],
                **settings_of(gcfg),
                seed=seed_of("generator", seed, n),
                desc=f"generator seed {seed} N {n}",
            )
            pool = np.setdiff1d(train, real)
            count = int(acfg["synthetic_factor"] * n)
            s_truth, s_labels = synthetic_maps(data["truth"], labels, pool, count, rng)
            s_images = generate(fit.net, s_truth, s_labels, seed=seed_of("noise", seed, n))
            # How the generator does on slices it never saw: the validation scans' maps.
            v_idx = np.flatnonzero(val)
            gen_l1 = tex = float("nan")
            if len(v_idx):
                v_fake = generate(fit.net, data["truth"][v_idx], labels[v_idx], seed=seed_of("val", seed, n))
                gen_l1 = float(np.abs(v_fake - data["images"][v_idx]).mean())
                tex = texture_ratio(v_fake, data["images"][v_idx], data["truth"][v_idx], labels[v_idx])
            sets = {
                "real": (data["images"][real], labels[real]),
                "real+synthetic": (
                    np.concatenate([data["images"][real], s_images]),
                    np.concatenate([labels[real], s_labels]),
                ),
            }
            for cond, (x, y) in sets.items():
                scored, info = _train_scored(x, y, data, val, test, dcfg, acfg, det_seed)
                synth = count if cond == "real+synthetic" else 0
                for r in scored:
                    rows.append(
                        {
                            "seed": int(seed),
                            "n_real": int(n),
                            "n_synthetic": synth,
                            "condition": cond,
                            **r,
                            **info,
                            "generator_texture_ratio": tex if synth else float("nan"),
                            "generator_val_l1": gen_l1 if synth else float("nan"),
                        }
                    )
                by_type = {r["type"]: r["auc"] for r in scored}
                log.info(
                    "seed %s N %d %s (%d synthetic, %d steps): test AUC %s",
                    seed,
                    n,
                    cond,
                    synth,
                    info["steps"],
                    ", ".join(f"{t} {a:.3f}" for t, a in by_type.items()),
                )
    return rows


def write_csv(path: str | Path, rows: list[dict]) -> None:
    """Write the rows (``COLUMNS``) atomically; floats with 6 significant digits."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in COLUMNS})


def read_csv(path: str | Path) -> list[dict]:
    """The rows of :func:`write_csv` with their numeric types back (to redraw the table or figure)."""
    ints = {"seed", "n_real", "n_synthetic", "n_pos", "n_neg", "n_neg_within", "n_dice", "steps", "chosen_epoch"}
    rows = []
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            rows.append(
                {
                    k: (int(v) if k in ints else v if k in ("condition", "type") else float(v) if v else float("nan"))
                    for k, v in r.items()
                }
            )
    return rows


def summarise(rows: list[dict], metric: str = "auc") -> list[dict]:
    """Per (N, type): mean and 95 % CI half-width over seeds of each condition, and of the paired
    difference real+synthetic minus real (same seed, same subset).

    Returns:
        Dicts with n_real, n_synthetic, type, n_pos, n_neg, seeds, and
        ``{cond}_mean``, ``{cond}_ci``, ``diff_mean``, ``diff_ci``.
    """
    out = []
    keys = list(dict.fromkeys((r["n_real"], r["type"]) for r in rows))
    for n, t in keys:
        sel = [r for r in rows if r["n_real"] == n and r["type"] == t]
        by = {c: {r["seed"]: r[metric] for r in sel if r["condition"] == c} for c in CONDITIONS}
        row = {
            "n_real": n,
            "n_synthetic": max(r["n_synthetic"] for r in sel),
            "type": t,
            "n_pos": sel[0]["n_pos"],
            "n_neg": sel[0]["n_neg"],
        }
        for c in CONDITIONS:
            m, h, k = mean_ci(by[c].values())
            row[f"{c}_mean"], row[f"{c}_ci"], row["seeds"] = m, h, k
        paired = [by["real+synthetic"][s] - by["real"][s] for s in by["real"] if s in by["real+synthetic"]]
        row["diff_mean"], row["diff_ci"], _ = mean_ci(paired)
        out.append(row)
    return out


def _fmt(mean: float, half: float | None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    return f"{mean:.3f}" + (f" ± {half:.3f}" if half is not None else "")


def table(rows: list[dict], fp_rate: float, generator: dict) -> str:
    """Markdown: AUC and sensitivity per N and type, with and without synthetic slices."""
    seeds = sorted({r["seed"] for r in rows})
    tex = [r["generator_texture_ratio"] for r in rows if r["n_synthetic"] and r["type"] == "any"]
    gl1 = [r["generator_val_l1"] for r in rows if r["n_synthetic"] and r["type"] == "any"]
    tm, th, tn = mean_ci(tex)
    lm, lh, _ = mean_ci(gl1)
    lines = [
        "# Augmentation utility: detector trained on N real slices, with and without generated slices",
        "",
        f"Seeds {seeds} (mean ± 95 % Student-t CI over seeds; the difference is paired: same real "
        "subset and detector seed). Real: N training slices (stratified so every defect type "
        "appears). Synthetic: images generated from the truth and label maps of the other training "
        "slices by a mask-conditioned generator trained on the N real slices only "
        f"({generator['iterations']} iterations, lambda_l1 {generator['lambda_l1']:g}, lambda_adv "
        f"{generator['lambda_adv']:g}). Both detectors: same seed, same optimiser steps, selected on "
        f"the validation scans; thresholds flag at most {fp_rate:.0%} of the validation scans' "
        "defect-free slices. Scored on the test scans' reference images: AUC of type-t slices "
        "against defect-free slices.",
        "",
        f"Generator on the validation scans' maps (N = {tn} runs, mean ± 95 % CI [min-max]): mean "
        f"|generated - reference| {_fmt(lm, lh)} [{np.nanmin(gl1):.3f}-{np.nanmax(gl1):.3f}]; interior "
        f"texture ratio (std in uniform regions, generated / real; 1 = the real noise level) {_fmt(tm, th)} "
        f"[{np.nanmin(tex):.2f}-{np.nanmax(tex):.2f}].",
        "",
        "## AUC",
        "",
        "| N real | N synthetic | type | N pos / neg | real | real + synthetic | difference |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summarise(rows, "auc"):
        lines.append(
            f"| {s['n_real']} | {s['n_synthetic']} | {s['type']} | {s['n_pos']} / {s['n_neg']} | "
            f"{_fmt(s['real_mean'], s['real_ci'])} | {_fmt(s['real+synthetic_mean'], s['real+synthetic_ci'])} | "
            f"{_fmt(s['diff_mean'], s['diff_ci'])} |"
        )
    lines += [
        "",
        f"## Sensitivity at the {fp_rate:.0%} validation FP threshold (FP rate on the test defect-free slices)",
        "",
        "| N real | type | real: sensitivity | real: FP | real + synthetic: sensitivity | real + synthetic: FP |",
        "|---|---|---|---|---|---|",
    ]
    sens = {(s["n_real"], s["type"]): s for s in summarise(rows, "sensitivity")}
    fps = {(s["n_real"], s["type"]): s for s in summarise(rows, "fp_rate")}
    for key, s in sens.items():
        f = fps[key]
        lines.append(
            f"| {key[0]} | {key[1]} | {_fmt(s['real_mean'], s['real_ci'])} | {_fmt(f['real_mean'], f['real_ci'])} | "
            f"{_fmt(s['real+synthetic_mean'], s['real+synthetic_ci'])} | "
            f"{_fmt(f['real+synthetic_mean'], f['real+synthetic_ci'])} |"
        )
    return "\n".join(lines) + "\n"


def write_table(path: str | Path, rows: list[dict], fp_rate: float, generator: dict) -> None:
    """Write :func:`table` atomically."""
    write_text(path, table(rows, fp_rate, generator))


def plot(path: str | Path, rows: list[dict], title: str) -> None:
    """AUC against N real, one panel per defect type with test positives, with and without
    synthetic slices (mean over seeds, 95 % CI band, seeds as dots)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    types = [t for t in (*TYPES, "any") if any(r["type"] == t and r["n_pos"] > 0 for r in rows)]
    fig, axes = plt.subplots(1, len(types), figsize=(3.0 * len(types), 3.2), squeeze=False, sharey=True)
    summary = summarise(rows, "auc")
    for ax, t in zip(axes[0], types):
        sel = [s for s in summary if s["type"] == t]
        ns = np.array([s["n_real"] for s in sel])
        for k, c in enumerate(CONDITIONS):
            m = np.array([s[f"{c}_mean"] for s in sel], float)
            h = np.array([s[f"{c}_ci"] if s[f"{c}_ci"] is not None else 0.0 for s in sel], float)
            ax.plot(ns, m, marker="os"[k], color=f"C{k}", label=c)
            ax.fill_between(ns, m - h, m + h, color=f"C{k}", alpha=0.15)
            pts = [(r["n_real"], r["auc"]) for r in rows if r["type"] == t and r["condition"] == c]
            ax.plot(*zip(*pts), ls="none", marker=".", color=f"C{k}", alpha=0.5)
        ax.axhline(0.5, color="grey", lw=0.5)
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.set_title(f"{t} (N pos {sel[0]['n_pos']}, neg {sel[0]['n_neg']})", fontsize=9)
        ax.set_xlabel("real labelled training slices N")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    seeds = sorted({r["seed"] for r in rows})
    axes[0, 0].set_ylabel(f"test AUC (seeds {', '.join(map(str, seeds))}; band 95 % CI)")
    axes[0, 0].legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
