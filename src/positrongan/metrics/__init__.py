"""Evaluation metrics, one module per metric, and the registry that runs them.

Each registered metric is ``fn(subject, ctx) -> dict`` of result columns (see
docs/contract.md "Evaluation" for the column names). They run in registry order for every
method and for the ``real`` reference row.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from . import c2st, fid, memorisation, msssim, swd
from .context import Context, Subject

log = logging.getLogger(__name__)


def _diversity(subject: Subject, ctx: Context) -> dict:
    settings = msssim.MSSSIMSettings.from_config(ctx.ev)
    rng = np.random.default_rng(ctx.row_seed("msssim", subject))
    value, pairs = msssim.mean_pairwise(subject.images, ctx.ev["msssim_pairs"], rng, settings, ctx.device)
    return {"msssim": value, "msssim_pairs": pairs}


def _memorisation(subject: Subject, ctx: Context) -> dict:
    settings = msssim.MSSSIMSettings.from_config(ctx.ev)
    best, _ = memorisation.nearest_train_msssim(subject.images, ctx.train, settings, ctx.device)
    return {"nearest_train_msssim": float(best.mean()), "nearest_train_msssim_max": float(best.max())}


def _swd(subject: Subject, ctx: Context) -> dict:
    # Patches are drawn per row; the projections are one set for every row (methods and floors).
    res = swd.sliced_wasserstein(
        ctx.reference(subject),
        subject.compared,
        ctx.ev,
        ctx.row_seed("swd", subject),
        projection_seed=ctx.seed("swd", "projections"),
    )
    out = {"swd": res["swd"]}
    out.update({f"swd_{size}px": v for size, v in res["swd_levels"].items()})
    return out


def _fid_kid(subject: Subject, ctx: Context) -> dict:
    ev = ctx.ev
    if "fid_status" not in ctx.cache:
        ctx.cache["fid_status"] = fid.weights_status() if ev["fid"] else fid.DISABLED
    status = ctx.cache["fid_status"]
    if status is not None:
        return {"fid": None, "kid": None, "kid_std": None, "kid_subset_size": None, "fid_status": status}
    if "inception" not in ctx.cache:
        ctx.cache["inception"] = fid.load_inception(ctx.device)
        ctx.cache["test_act"] = fid.activations(ctx.cache["inception"], ctx.test, ev["batch_size"], ctx.device)
    act = fid.activations(ctx.cache["inception"], subject.compared, ev["batch_size"], ctx.device)
    if subject.reference is None:
        test_act = ctx.cache["test_act"]
    else:
        test_act = fid.activations(ctx.cache["inception"], subject.reference, ev["batch_size"], ctx.device)
    rng = np.random.default_rng(ctx.row_seed("kid", subject))
    kid, kid_std, m = fid.kernel_inception_distance(act, test_act, ev["kid_subsets"], ev["kid_subset_size"], rng)
    return {
        "fid": fid.frechet_distance(act, test_act),
        "kid": kid,
        "kid_std": kid_std,
        "kid_subset_size": m,
        "fid_status": "ok",
    }


def _c2st(subject: Subject, ctx: Context) -> dict:
    acc, n = c2st.c2st_accuracy(
        subject.compared, ctx.reference(subject), ctx.ev["c2st_epochs"], ctx.row_seed("c2st", subject), ctx.device
    )
    return {"c2st": acc, "c2st_n": n}


# name -> metric. Order is the order of the columns in metrics.csv.
METRICS: dict[str, Callable[[Subject, Context], dict]] = {
    "msssim": _diversity,
    "memorisation": _memorisation,
    "fid_kid": _fid_kid,
    "swd": _swd,
    "c2st": _c2st,
}


def evaluate(subject: Subject, ctx: Context, names: list[str] | None = None) -> dict:
    """Run the registered metrics on one subject.

    Params:
        subject: the row (method samples, or the real reference).
        ctx: shared inputs.
        names: metrics to run (default: all, in registry order).
    Returns:
        Column -> value, with ``n_images`` and ``n_test`` (the N of every distance) first.
    """
    row: dict = {"n_images": len(subject.compared), "n_test": len(ctx.reference(subject))}
    for name in names or list(METRICS):
        t0 = time.perf_counter()
        row.update(METRICS[name](subject, ctx))
        log.info("%s: %s done in %.2f s", subject.name, name, time.perf_counter() - t0)
    return row


__all__ = ["METRICS", "Context", "Subject", "c2st", "evaluate", "fid", "memorisation", "msssim", "swd"]
