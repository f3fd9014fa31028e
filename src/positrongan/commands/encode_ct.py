"""``positrongan encode-ct``: encode every CT slice with the trained VAE (mu, log sigma^2)."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--corpus",
        metavar="DIR",
        help="CT corpus folder (DeepLesion layout, or DICOM tree for ct.source = dicom); default: ct.path",
    )
    parser.add_argument("--model", required=True, metavar="FILE", help="input: trained VAE (model.pt)")
    parser.add_argument("--out", required=True, metavar="FILE", help="output: latents.npz (mu, logvar, names)")


def run(args: argparse.Namespace, cfg: dict) -> None:
    from ..data.ct import read_corpus
    from ..models.vae import encode_images, load_vae
    from ..runtime import torch_device
    from ..train.latents import save_latents

    model = load_vae(args.model, torch_device(cfg["device"]))
    # The slices are resized to the model's own resolution, whatever the config says now.
    corpus = read_corpus(cfg["ct"], args.corpus, model.image_size)
    mu, logvar = encode_images(model, corpus.images, batch_size=cfg["vae"]["batch_size"])
    save_latents(args.out, mu.numpy(), logvar.numpy(), corpus.names)
    log.info("encoded %d CT slices to %d-d latents: %s", len(corpus.names), mu.shape[1], args.out)
