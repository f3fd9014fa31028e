"""The evaluation stage: inputs -> metrics for every method and the real reference -> CSV,
table and grid. The command module only parses options and calls :func:`run_evaluation`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from .. import metrics
from ..io import atomic_path, write_text
from ..metrics import fid, swd
from ..metrics.inputs import load_real, load_samples
from ..metrics.msssim import MSSSIMSettings
from . import figures, table

log = logging.getLogger(__name__)


def check_settings(ev: dict, size: int) -> None:
    """ConfigError naming the key when MS-SSIM or SWD cannot run at this image size."""
    MSSSIMSettings.from_config(ev).check(size)
    swd.check_settings(size, ev)


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
) -> pd.DataFrame:
    """Score every method against the held-out real images and write the three outputs.

    Params:
        dataset: dataset/positron.npz.
        samples: samples/{method}.npz files.
        methods: training.methods (row order; each needs a file).
        ev: the ``evaluation`` config section.
        device: torch device.
        seed: stable seed from names, e.g. ``seed("swd", "ours")``.
        metrics_csv, table_md, grid_png: outputs.
    Returns:
        The metrics table (also written to ``metrics_csv``).
    """
    train, test = load_real(dataset)
    size = test.shape[-1]
    check_settings(ev, size)
    sets = load_samples(samples, methods, size, ev["samples"])
    ctx = metrics.Context(test=test, train=train, ev=ev, device=device, seed=seed)

    rows = []
    for s in sets:
        row = {"method": s.method, "n_train": len(train)}
        row.update(metrics.evaluate(metrics.Subject(s.method, s.images, s.images), ctx))
        row.update({"train_seconds": s.train_seconds, "samples_per_second": s.samples_per_second})
        rows.append(row)
    # Reference row: the real test images' own diversity and closeness to the training set, and
    # the distances between the training and the test images.
    real = {"method": "real", "n_train": len(train)}
    real.update(metrics.evaluate(metrics.Subject("real", test, train), ctx))
    real.update({"train_seconds": None, "samples_per_second": None})
    rows.append(real)
    df = pd.DataFrame(rows)

    with atomic_path(metrics_csv) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
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
    }
    write_text(table_md, table.render(df, meta))
    grid_rows = [(table.NAMES["real"], figures.spread(test, ev["grid_samples"]))]
    order = [m for m in table.ORDER if m in methods] + [m for m in methods if m not in table.ORDER]
    by_name = {s.method: s.images for s in sets}
    grid_rows += [(table.NAMES.get(m, m), by_name[m]) for m in order]
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
