"""The evaluation stage: inputs -> metrics for every method and the real reference -> CSV,
the held-out reference statistics, table and grid. The command module only parses options
and calls :func:`run_evaluation`; ``report/`` renders the table and the figures."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_path, save_npz, write_text
from ..report import figures, table
from . import Context, Subject, evaluate, fid, swd
from .inputs import load_real, load_samples, split_half
from .msssim import MSSSIMSettings

log = logging.getLogger(__name__)

HISTOGRAM_BINS = 64


class DomainMetrics:
    """Distances in the feature space of the defect detector (``results/detect/detector.pt``,
    trained on the training split only): Fréchet distance and KID of its pooled bottleneck
    features, improved precision/recall (Kynkäänniemi et al. 2019, k = 3), and per defect type
    the fraction of images in which it finds the type (at its validation-fixed thresholds).
    Not FID: no Inception network is involved.

    Params:
        detector: the model from ``detect.train.load_detector``.
        seed: KID subset draws.
    """

    KID_SUBSETS = 50

    def __init__(self, detector, seed: int):
        from ..detect.infer import detector_features, detector_scores

        self.model = detector
        self._features, self._scores = detector_features, detector_scores
        self.types = list(detector.types)
        self.thresholds = detector.thresholds if detector.thresholds is not None else np.full(len(self.types), 0.5)
        self.seed = seed
        # id -> (the array itself, so its id stays its own; features; scores)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def _fs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        hit = self._cache.get(id(images))
        if hit is None or hit[0] is not images:
            hit = (images, self._features(self.model, images), self._scores(self.model, images))
            self._cache[id(images)] = hit
        return hit[1], hit[2]

    def row(self, images: np.ndarray, reference: np.ndarray) -> dict:
        """The columns of one row: ``images`` against the held-out ``reference``."""
        from .domain import defect_fractions, frechet_distance, kid, precision_recall

        fa, sa = self._fs(images)
        fr, sr = self._fs(reference)
        # k-NN manifolds need more than k points per set (the split-half floor of a tiny run may not have them).
        k = 3
        precision, recall = precision_recall(fr, fa, k=k) if min(len(fr), len(fa)) > k else (None, None)
        out = {
            "det_fd": frechet_distance(fr, fa),
            "det_kid": kid(fr, fa, self.KID_SUBSETS, 1000, np.random.default_rng(self.seed)),
            "det_precision": precision,
            "det_recall": recall,
        }
        for t, frac, ref in zip(
            self.types, defect_fractions(sa, self.thresholds), defect_fractions(sr, self.thresholds)
        ):
            out[f"defect_{t}"] = float(frac)
            out[f"defect_{t}_ref"] = float(ref)
        return out


def check_settings(ev: dict, size: int) -> None:
    """ConfigError naming the key when MS-SSIM or SWD cannot run at this image size.

    config.py refuses settings that do not fit ``dataset.image_size`` before any job; this
    checks the images the dataset really holds, before the metrics start.
    """
    MSSSIMSettings.from_config(ev).check(size)
    swd.check_settings(size, ev)


def reference_statistics(train: np.ndarray, test: np.ndarray, real: dict, ctx: Context) -> dict[str, np.ndarray]:
    """What the held-out real images look like to the evaluation: the floors every row is
    compared with, and statistics to check a later evaluation against the same reference.

    Params:
        train, test: the real training and held-out test images (N, S, S) in [0, 1].
        real: the ``real`` row of the metrics (its MS-SSIM, nearest-train MS-SSIM and SWD).
        ctx: the metrics' context (its cache holds the test set's Inception activations when
            FID ran).
    Returns:
        Arrays of ``eval/reference.npz`` (see docs/contract.md); ``mu`` and ``sigma`` (the
        test set's Inception pool statistics, pytorch-fid's reference format) only when FID ran.
    """
    hist, edges = np.histogram(test, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    levels = sorted((int(c.removeprefix("swd_").removesuffix("px")) for c in real if c.endswith("px")), reverse=True)
    out = {
        "test_sha256": np.array(hashlib.sha256(np.ascontiguousarray(test, np.float32).tobytes()).hexdigest()),
        "n_test": np.int64(len(test)),
        "n_train": np.int64(len(train)),
        "image_size": np.int64(test.shape[-1]),
        "mean_image": test.mean(axis=0).astype(np.float32),
        "std_image": test.std(axis=0).astype(np.float32),
        "pixel_histogram": (hist / max(hist.sum(), 1)).astype(np.float64),
        "pixel_bin_edges": edges,
        "msssim": np.float64(real["msssim"]),
        "msssim_pairs": np.int64(real["msssim_pairs"]),
        "nearest_train_msssim": np.float64(real["nearest_train_msssim"]),
        "swd_train_test": np.float64(real["swd"]),
        "swd_level_px": np.array(levels, dtype=np.int64),
        "swd_train_test_levels": np.array([real[f"swd_{s}px"] for s in levels], dtype=np.float64),
        "fid_status": np.array(ctx.cache.get("fid_status") or "ok"),
    }
    if "test_act" in ctx.cache:
        act = np.asarray(ctx.cache["test_act"], np.float64)
        out.update(mu=act.mean(axis=0), sigma=np.cov(act, rowvar=False))
    return out


def run_evaluation(
    dataset: str | Path,
    samples: list[str | Path],
    methods: list[str],
    ev: dict,
    device,
    seed: Callable[..., int],
    metrics_csv: str | Path,
    table_md: str | Path,
    grid_png: str | Path,
    reference_npz: str | Path | None = None,
    seeds: list[int] | None = None,
    labels: dict[str, str] | None = None,
    budget: str | None = None,
    detector: str | Path | None = None,
    bases: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Score every (method, seed) against the held-out real images and write the outputs.

    Two real floors are evaluated once per seed (their spread is the metrics' own sampling
    noise): ``real`` (the training images against the held-out test images) and ``real_split``
    (one half of the held-out scans against the other, :func:`split_half`).

    Params:
        dataset: dataset/positron.npz.
        samples: samples/{method}_seed{seed}.npz files.
        methods: method rows, training.methods then the training.variants names (each
            (method, seed) needs a file).
        ev: the ``evaluation`` config section.
        device: torch device.
        seed: stable seed from names, e.g. ``seed("swd", "ours")``.
        metrics_csv, table_md, grid_png: outputs.
        reference_npz: output, the held-out reference statistics (:func:`reference_statistics`);
            None writes none.
        seeds: training.seeds (default [0]).
        labels: method -> table label (default: the registry's labels, else the name).
        budget: the training budget in words, for the capacity table.
        detector: ``detect/detector.pt``; adds the detector-feature metrics (:class:`DomainMetrics`).
            None: no such columns.
        bases: row name -> the registered method it trains (the ``base`` column; default the name).
    Returns:
        The metrics table (also written to ``metrics_csv``).
    """
    train, test = load_real(dataset)
    size = test.shape[-1]
    check_settings(ev, size)
    seeds = [0] if seeds is None else list(seeds)
    # Every row's distances at the same N: the generated sets are cut to the training set's size
    # when it is smaller than evaluation.samples, so the train-vs-held-out floor (all training
    # images) is measured at the N of the method rows (the split-half floor is smaller still: its
    # N is in the table).
    n_eval = min(ev["samples"], len(train))
    sets = load_samples(samples, methods, size, ev["samples"], seeds)
    for s in sets:
        s.images = s.images[:n_eval]
    ctx = Context(test=test, train=train, ev=ev, device=device, seed=seed)
    # The floor's training images at the same N (all of them unless evaluation.samples is smaller).
    keep = np.sort(np.random.default_rng(seed("floor_subset")).choice(len(train), n_eval, replace=False))
    train_n = train if n_eval == len(train) else train[keep]
    half_a, half_b = split_half(dataset)
    domain = None
    if detector is not None:
        from ..detect.train import load_detector

        domain = DomainMetrics(load_detector(detector), seed("detector_kid"))

    rows = []
    for s in sets:
        row = {"method": s.method, "base": (bases or {}).get(s.method, s.method), "seed": s.seed, "n_train": len(train)}
        row.update(evaluate(Subject(s.method, s.images, s.images, seed=s.seed), ctx))
        if domain is not None:
            row.update(domain.row(s.images, test))
        row.update({"train_seconds": s.train_seconds, "samples_per_second": s.samples_per_second, **s.info})
        rows.append(row)
    # The real floors: the test images' own diversity and closeness to the training set with the
    # distances between the training and the test images; and one half of the held-out scans
    # against the other.
    real_rows = []
    for sd in seeds:
        real = {"method": "real", "seed": sd, "n_train": len(train)}
        real.update(evaluate(Subject("real", test, train_n, seed=sd), ctx))
        if domain is not None:
            real.update(domain.row(train_n, test))
        real_rows.append(real)
        half = {"method": "real_split", "seed": sd, "n_train": len(train)}
        if len(half_a) >= 2 and len(half_b) >= 2:
            half.update(evaluate(Subject("real_split", half_a, half_a, seed=sd, reference=half_b), ctx))
            if domain is not None:
                half.update(domain.row(half_a, half_b))
        else:
            log.warning("fewer than 2 test images in a half of the held-out scans: no split-half floor")
        rows += [real, half]
    for r in rows:
        r.setdefault("train_seconds", None)
        r.setdefault("samples_per_second", None)
    real = real_rows[0]
    df = pd.DataFrame(rows)

    with atomic_path(metrics_csv) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
    if reference_npz is not None:
        save_npz(reference_npz, **reference_statistics(train, test, real, ctx))
    status = ctx.cache.get("fid_status") or "ok"
    meta = {
        "size": size,
        "n_train": len(train),
        "n_test": len(test),
        "msssim": {"scales": ev["msssim_scales"], "window": ev["msssim_window"], "sigma": ev["msssim_sigma"]},
        "swd": {
            "levels": ", ".join(c.removeprefix("swd_").removesuffix("px") for c in df.columns if c.endswith("px")),
            "patches": ev["swd_patches"],
            "projections": ev["swd_projections"],
            "patch_size": ev["swd_patch_size"],
        },
        "fid_status": status,
        "weights_path": fid.weights_path(),
        "labels": labels or {},
        "c2st_epochs": ev["c2st_epochs"],
        "budget": budget or "see training.budget",
        "domain": domain is not None,
    }
    write_text(table_md, table.render(df, meta))
    names = {**table.NAMES, **(labels or {})}
    grid_rows = [(table.NAMES["real"], figures.spread(test, ev["grid_samples"]))]
    by_name = {s.method: s.images for s in reversed(sets)}  # the first seed's samples
    grid_rows += [(names.get(m, m), by_name[m]) for m in table.order(methods)]
    figures.sample_grid(grid_rows, grid_png, ev["grid_samples"])
    log.info(
        "evaluated %d method(s) against %d test images; wrote %s, %s, %s",
        len(sets),
        len(test),
        metrics_csv,
        table_md,
        grid_png,
    )
    return df
