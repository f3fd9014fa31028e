"""``positrongan extract-features``: PCA (or PCANet) features of the training positron
images, the memory of the attention module (paper §3.3)."""

from __future__ import annotations

import argparse
import logging

import numpy as np

from ..config import derived_seed
from ..errors import ConfigError
from ..io import save_npz

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, metavar="NPZ", help="dataset/positron.npz")
    parser.add_argument("--out", required=True, metavar="NPZ", help="features/positron_features.npz to write")


def run(args: argparse.Namespace, cfg: dict) -> None:
    from ..features.extract import memory_features
    from ..train.data import training_images

    feat = cfg["features"]
    images = training_images(args.dataset)
    if feat["method"] == "pcanet":
        if feat["pcanet_block"] > images.shape[-1]:
            raise ConfigError(
                f"config key 'features.pcanet_block' = {feat['pcanet_block']} exceeds the image size {images.shape[-1]}"
            )
        if max(feat["pcanet_filters"]) > feat["pcanet_patch"] ** 2:
            raise ConfigError(
                f"config key 'features.pcanet_filters' = {feat['pcanet_filters']}: at most pcanet_patch^2 = "
                f"{feat['pcanet_patch'] ** 2} filters per stage"
            )
        if feat["pcanet_filters"][1] > 16:
            raise ConfigError("config key 'features.pcanet_filters': at most 16 stage-2 filters (2^16 histogram bins)")
    out = memory_features(images, feat, seed=derived_seed(cfg, "features"))
    out["names"] = _names(args.dataset, len(images))
    save_npz(args.out, **out)
    log.info("wrote %s (%d training images of %d px)", args.out, len(images), images.shape[-1])


def _names(dataset: str, n: int) -> np.ndarray:
    # "scan_003/plane_041" per memory vector when the dataset says where its slices come from.
    from ..io import load_npz

    data = load_npz(dataset)
    if "scan" in data and "plane" in data:
        train = data["split"].astype(str) == "train"
        return np.array([f"{s}/plane_{int(p):03d}" for s, p in zip(data["scan"][train], data["plane"][train])])
    return np.array([f"train_{i:05d}" for i in range(n)])
