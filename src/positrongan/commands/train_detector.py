"""``positrongan train-detector``: the defect detector, trained on reference-count training slices."""

from __future__ import annotations

import argparse
import logging

import numpy as np

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, metavar="NPZ", help="dataset/positron.npz")
    parser.add_argument("--out", required=True, metavar="PT", help="output: detect/detector.pt")
    parser.add_argument(
        "--meta",
        metavar="JSON",
        help="output: the training metadata, history and thresholds as JSON (detect/detector.json)",
    )


def run(args: argparse.Namespace, cfg: dict) -> None:
    import torch

    from ..config import derived_seed
    from ..detect.train import fit_thresholds, save_detector, settings_of, train_detector
    from ..errors import ArtifactError
    from ..io import load_npz, write_json

    dc = cfg["detection"]
    data = load_npz(args.dataset, ("images", "defect_labels", "split"))
    split = data["split"]
    train, val = split == "train", split == "val"
    if not train.any():
        raise ArtifactError(f"{args.dataset}: no training slices to train the detector on")
    images, labels = data["images"], data["defect_labels"]
    if not (labels[train] > 0).any():
        raise ArtifactError(f"{args.dataset}: the training slices hold no defect; the detector cannot learn one")
    torch.use_deterministic_algorithms(True)
    seed = derived_seed(cfg, "detection", "train")
    model, meta = train_detector(
        images[train],
        labels[train],
        images[val] if val.any() else None,
        labels[val] if val.any() else None,
        epochs=dc["epochs"],
        **settings_of(dc),
        seed=seed,
    )
    source = "val"
    free_val = val & ~(labels.reshape(len(labels), -1) > 0).any(1)
    if not free_val.any():
        # A tiny config may have no defect-free validation slice; training slices then stand in,
        # which makes the thresholds optimistic (lower FP on seen slices): recorded in the metadata.
        log.warning("no defect-free validation slice: thresholds fixed on the training slices instead")
        source = "train"
    pick = val if source == "val" else train
    thresholds = fit_thresholds(model, images[pick], labels[pick], dc["fp_rate"])
    meta.update(
        {
            "thresholds": thresholds.tolist(),
            "threshold_source": source,
            "fp_rate": dc["fp_rate"],
            "types": list(model.types),
            "dataset": str(args.dataset),
            "train_scans": sorted(np.unique(data["scan"][train]).tolist()) if "scan" in data else [],
            "val_scans": sorted(np.unique(data["scan"][val]).tolist()) if "scan" in data else [],
            "config": dict(dc),
        }
    )
    save_detector(args.out, model, meta)
    log.info(
        "wrote %s (thresholds at %.0f%% FP on %s: %s)", args.out, 100 * dc["fp_rate"], source, np.round(thresholds, 3)
    )
    if args.meta:
        write_json(args.meta, meta)
