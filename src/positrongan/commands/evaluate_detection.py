"""``positrongan evaluate-detection``: the detector on the test scans at every count level."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, metavar="NPZ", help="dataset/positron.npz")
    parser.add_argument("--detector", required=True, metavar="PT", help="detect/detector.pt")
    parser.add_argument(
        "--enhanced",
        nargs="*",
        default=[],
        metavar="NPZ",
        help="enhance/{method}/seed{seed}.npz files (enhanced twins of the test slices); none: reference and raw only",
    )
    parser.add_argument("--csv", required=True, metavar="CSV", help="output: eval/detection.csv")
    parser.add_argument("--png", required=True, metavar="PNG", help="output: eval/detection.png")
    parser.add_argument(
        "--table", required=True, metavar="MD", help="output: eval/detection.md (headline and per-type table)"
    )


def run(args: argparse.Namespace, cfg: dict) -> None:
    import numpy as np
    import torch

    from ..detect.evaluate import plot, run_detection_study, write_csv, write_table
    from ..detect.train import load_detector
    from ..errors import ArtifactError
    from ..io import load_npz

    dc = cfg["detection"]
    torch.use_deterministic_algorithms(True)
    model = load_detector(args.detector)
    if model.thresholds is None:
        raise ArtifactError(f"{args.detector}: holds no thresholds; retrain it with positrongan train-detector")
    data = load_npz(args.dataset, ("images", "defect_labels", "split"))
    if data["images"].shape[-1] % 2**model.levels:
        raise ArtifactError(f"{args.dataset}: image size {data['images'].shape[-1]} does not suit the detector")
    rows = run_detection_study(model, data, np.asarray(model.thresholds), args.enhanced)
    write_csv(args.csv, rows)
    n_test = int((data["split"] == "test").sum())
    scans = len(np.unique(data["scan"][data["split"] == "test"])) if "scan" in data else 0
    plot(
        args.png,
        rows,
        f"defect detection on {n_test} test slices of {scans} scans (detector trained at reference counts)",
    )
    write_table(
        args.table, rows, dc["match_tolerance"], model.meta.get("fp_rate", dc["fp_rate"]), dc["min_reference_auc"]
    )
    for r in rows:
        if r["condition"] in ("reference", "raw"):
            log.info(
                "%s f=%g %s: N pos %d / neg %d, AUC %.3f, sensitivity %.3f, FP %.3f",
                r["condition"],
                r["fraction"],
                r["type"],
                r["n_pos"],
                r["n_neg"],
                r["auc"],
                r["sensitivity"],
                r["fp_rate"],
            )
    log.info("wrote %s, %s, %s", args.csv, args.png, args.table)
