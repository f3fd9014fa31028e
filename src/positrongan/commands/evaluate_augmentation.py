"""``positrongan evaluate-augmentation``: the detector trained on N real labelled slices, with and
without slices from a mask-conditioned generator, scored on the test scans (issue 17 item 4)."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, metavar="NPZ", help="dataset/positron.npz")
    parser.add_argument("--csv", required=True, metavar="CSV", help="output: eval/augmentation.csv (every run)")
    parser.add_argument("--table", required=True, metavar="MD", help="output: eval/augmentation.md")
    parser.add_argument("--png", required=True, metavar="PNG", help="output: eval/augmentation.png")


def run(args: argparse.Namespace, cfg: dict) -> None:
    import numpy as np
    import torch

    from ..config import derived_seed
    from ..detect.augment import plot, run_augmentation_study, write_csv, write_table
    from ..errors import ArtifactError
    from ..io import load_npz

    dc = cfg["detection"]
    data = load_npz(args.dataset, ("images", "truth", "defect_labels", "split"))
    n_train = int((data["split"] == "train").sum())
    if max(dc["augmentation"]["real_counts"]) >= n_train:
        raise ArtifactError(
            f"{args.dataset}: detection.augmentation.real_counts goes up to "
            f"{max(dc['augmentation']['real_counts'])}, but the training split holds only {n_train} slices "
            "(some must stay outside the real subset to draw synthetic maps from)"
        )
    if not (data["split"] == "test").any():
        raise ArtifactError(f"{args.dataset}: no test slices to score the detectors on")
    torch.use_deterministic_algorithms(True)
    rows = run_augmentation_study(data, dc, lambda *names: derived_seed(cfg, "augmentation", *names))
    write_csv(args.csv, rows)
    write_table(args.table, rows, dc["fp_rate"], dc["conditional"])
    test = data["split"] == "test"
    scans = len(np.unique(data["scan"][test])) if "scan" in data else 0
    plot(
        args.png,
        rows,
        f"detector on {int(test.sum())} test slices of {scans} scans: N real slices with / without "
        f"{dc['augmentation']['synthetic_factor']:g} x N generated",
    )
    log.info("wrote %s, %s, %s", args.csv, args.table, args.png)
