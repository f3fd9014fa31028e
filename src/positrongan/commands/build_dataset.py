"""``positrongan build-dataset``: reconstructed slices + truth -> the 2D positron image dataset."""

from __future__ import annotations

import argparse
import functools
import logging
from pathlib import Path

from ..config import derived_seed
from ..data.positron import build_dataset, write_overview, write_twins
from ..errors import ArtifactError
from ..io import save_npz

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--recon", nargs="+", required=True, metavar="NPZ", help="reconstructions (results/recon/{scan}.npz)"
    )
    parser.add_argument(
        "--truth", nargs="+", required=True, metavar="NPZ", help="truth maps (results/truth/{scan}.npz)"
    )
    parser.add_argument(
        "--low-count",
        nargs="*",
        default=[],
        metavar="NPZ",
        help="short-scan twins (results/recon/lowcount/{scan}_f{fraction}.npz), one per scan and fraction",
    )
    parser.add_argument("--out", required=True, metavar="NPZ", help="dataset (results/dataset/positron.npz)")
    parser.add_argument("--png", metavar="PNG", help="overview figure of some slices and their truth")
    parser.add_argument(
        "--twins-png", metavar="PNG", help="one slice per defect type at every low-count fraction, beside the reference"
    )


def _by_scan(paths: list[str], what: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in map(Path, paths):
        if p.stem in out:
            raise ArtifactError(f"{p}: two {what} files for scan '{p.stem}'")
        out[p.stem] = p
    return out


def _twins(paths: list[str]) -> dict[str, dict[float, Path]]:
    """``{scan}_f{fraction}.npz`` files -> scan -> fraction -> path."""
    out: dict[str, dict[float, Path]] = {}
    for p in map(Path, paths):
        scan, sep, frac = p.stem.rpartition("_f")
        try:
            f = float(frac)
        except ValueError:
            f = None
        if not sep or f is None:
            raise ArtifactError(f"{p}: a low-count reconstruction must be named {{scan}}_f{{fraction}}.npz")
        if f in out.setdefault(scan, {}):
            raise ArtifactError(f"{p}: two low-count reconstructions of scan '{scan}' at fraction {f:g}")
        out[scan][f] = p
    return out


def run(args: argparse.Namespace, cfg: dict) -> None:
    import numpy as np

    data = build_dataset(
        _by_scan(args.recon, "reconstruction"),
        _by_scan(args.truth, "truth"),
        cfg["dataset"],
        functools.partial(derived_seed, cfg),
        _twins(args.low_count),
    )
    save_npz(args.out, **data)
    n = {s: int((data["split"] == s).sum()) for s in ("train", "val", "test")}
    log.info(
        "wrote %s: %d slices of %d px (%s), %d cut a defect",
        args.out,
        len(data["images"]),
        data["images"].shape[-1],
        ", ".join(f"{k} {v}" for k, v in n.items()),
        int(np.sum(data["has_defect"])),
    )
    if args.png:
        write_overview(args.png, data)
        log.info("wrote %s", args.png)
    if args.twins_png:
        write_twins(args.twins_png, data)
        log.info("wrote %s", args.twins_png)
