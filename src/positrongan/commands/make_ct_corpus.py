"""``positrongan make-ct-corpus``: write the synthetic body-CT corpus in the DeepLesion layout."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..config import derived_seed

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="corpus folder (receives Images_png/ and DL_info.csv)"
    )


def run(args: argparse.Namespace, cfg: dict) -> None:
    from ..data.synthetic_ct import write_corpus
    from ..io import atomic_dir

    ct = cfg["ct"]
    out = Path(args.out)
    # Images_png/ is built aside and renamed into place only when every slice is written;
    # DL_info.csv is written atomically. An interrupted run leaves neither half-written.
    with atomic_dir(out / "Images_png") as tmp_images:
        write_corpus(
            tmp_images,
            out / "DL_info.csv",
            count=ct["synthetic_count"],
            size=ct["synthetic_size"],
            seed=derived_seed(cfg, "ct", "synthetic"),
            slices_per_series=ct["synthetic_slices_per_series"],
        )
    log.info("synthetic CT corpus: %s and %s", out / "Images_png", out / "DL_info.csv")
