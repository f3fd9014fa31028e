"""``positrongan train-vae``: train the CT VAE prior (paper §3.2) on the CT corpus."""

from __future__ import annotations

import argparse
import logging

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
        "--checkpoint", required=True, metavar="FILE", help="output: full training state (checkpoint.pt)"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from --checkpoint when it exists (same run settings; more vae.epochs extends a finished run)",
    )


def run(args: argparse.Namespace, cfg: dict) -> None:
    from ..data.ct import read_corpus
    from ..models.vae import save_vae
    from ..runtime import torch_device
    from ..train.ct_vae import save_recon_grid, train_vae, write_losses

    size = cfg["dataset"]["image_size"]
    corpus = read_corpus(cfg["ct"], args.corpus, size)
    device = torch_device(cfg["device"])
    result = train_vae(
        corpus.images,
        cfg["vae"],
        seed=derived_seed(cfg, "vae"),
        device=device,
        checkpoint=args.checkpoint,
        resume=args.resume,
    )
    save_vae(result.model, args.model)
    write_losses(args.losses, result.losses)
    save_recon_grid(args.recon, result.model, corpus.images, corpus.names)
