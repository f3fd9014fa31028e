"""``positrongan build-dataset``: reconstructed slices + truth -> the 2D positron image dataset."""

from __future__ import annotations

import argparse
import functools
import logging
from pathlib import Path

from ..config import derived_seed
from ..data.positron import build_dataset, write_overview
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
    parser.add_argument("--out", required=True, metavar="NPZ", help="dataset (results/dataset/positron.npz)")
    parser.add_argument("--png", metavar="PNG", help="overview figure of some slices and their truth")


def _by_scan(paths: list[str], what: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in map(Path, paths):
        if p.stem in out:
            raise ArtifactError(f"{p}: two {what} files for scan '{p.stem}'")
        out[p.stem] = p
    return out


def run(args: argparse.Namespace, cfg: dict) -> None:
    import numpy as np

    data = build_dataset(
        _by_scan(args.recon, "reconstruction"),
        _by_scan(args.truth, "truth"),
        cfg["dataset"],
        functools.partial(derived_seed, cfg),
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
