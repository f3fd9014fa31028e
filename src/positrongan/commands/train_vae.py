"""``positrongan train-vae``: train the CT VAE prior (paper §3.2) on the CT corpus."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..config import derived_seed

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--corpus",
        metavar="DIR",
        help="CT corpus folder (DeepLesion layout, or DICOM tree for ct.source = dicom); default: ct.path",
    )
    parser.add_argument("--model", required=True, metavar="FILE", help="output: trained model (model.pt)")
    parser.add_argument("--losses", required=True, metavar="FILE", help="output: per-step losses (losses.csv)")
    parser.add_argument("--recon", required=True, metavar="FILE", help="output: PNG grid of inputs and reconstructions")
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="FILE",
        help="full training state (checkpoint.pt); resumed from when it belongs to the same run "
        "(more vae.epochs extend a finished run), as for every trainer",
    )


def run(args: argparse.Namespace, cfg: dict) -> None:
    from ..data.ct import read_corpus
    from ..runtime import torch_device
    from ..train.ct_vae import train_vae
    from ..train.loop import Outputs

    corpus = read_corpus(cfg["ct"], args.corpus, cfg["dataset"]["image_size"])
    train_vae(
        corpus.images,
        cfg["vae"],
        seed=derived_seed(cfg, "vae"),
        out=Outputs(Path(args.model), Path(args.checkpoint), Path(args.losses), Path(args.recon)),
        names=corpus.names,
        device=torch_device(cfg["device"]),
    )
