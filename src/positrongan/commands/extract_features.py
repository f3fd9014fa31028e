"""``positrongan extract-features``: PCA (or PCANet) features of the training positron
images, the memory of the attention module (paper §3.3)."""

from __future__ import annotations

import argparse
import logging

from ..config import derived_seed
from ..errors import ArtifactError, ConfigError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, metavar="NPZ", help="dataset/positron.npz")
    parser.add_argument("--out", required=True, metavar="NPZ", help="features/positron_features.npz to write")


def run(args: argparse.Namespace, cfg: dict) -> None:
    from ..data.positron import load_dataset
    from ..features.extract import memory_features, memory_names, save_features

    # The PCANet settings are checked against dataset.image_size by config.py, before any job;
    # here only against the images this dataset really holds.
    feat = cfg["features"]
    data = load_dataset(args.dataset)
    images = data["images"][data["split"] == "train"]
    if len(images) < 2:
        raise ArtifactError(f"{args.dataset}: {len(images)} training image(s); the features need at least 2")
    if feat["method"] == "pcanet" and feat["pcanet_block"] > images.shape[-1]:
        raise ConfigError(
            f"config key 'features.pcanet_block' = {feat['pcanet_block']} exceeds the size of the images in "
            f"{args.dataset} ({images.shape[-1]} px)"
        )
    out = memory_features(images, feat, seed=derived_seed(cfg, "features"))
    save_features(args.out, out, memory_names(data))
    log.info("wrote %s (%d training images of %d px)", args.out, len(images), images.shape[-1])
