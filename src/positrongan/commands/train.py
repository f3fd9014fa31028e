"""``positrongan train``: train one method (ours or a baseline) on the positron images, with
checkpoints and resume; writes generator.pt, checkpoint.pt, losses.csv and samples.png."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..config import derived_seed

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--method", required=True, help="a registered method (ours, vae, dcgan, wgan_gp) or a training.variants name"
    )
    parser.add_argument("--seed", type=int, default=0, help="training seed (one of training.seeds)")
    parser.add_argument("--dataset", required=True, metavar="NPZ", help="dataset/positron.npz")
    parser.add_argument("--features", metavar="NPZ", help="features/positron_features.npz (ours)")
    parser.add_argument("--latents", metavar="NPZ", help="vae/latents.npz, the CT latents (ours)")
    parser.add_argument("--vae-model", metavar="PT", help="vae/model.pt (ours with training.train_encoder)")
    parser.add_argument("--ct-root", metavar="DIR", help="the CT corpus folder (ours with training.train_encoder)")
    parser.add_argument("--generator", required=True, metavar="PT", help="generator.pt to write")
    parser.add_argument("--checkpoint", required=True, metavar="PT", help="checkpoint.pt (resumed from when present)")
    parser.add_argument("--losses", required=True, metavar="CSV", help="losses.csv to write")
    parser.add_argument("--samples", required=True, metavar="PNG", help="samples.png grid to write")


def run(args: argparse.Namespace, cfg: dict) -> None:
    from ..runtime import torch_device
    from ..train.loop import Outputs
    from ..train.registry import resolve
    from ..train.run import train_method

    base, tcfg = resolve(cfg["training"], args.method)
    # Variants share their method's seed stream: a variant and its method start from the same
    # initialisation and batches wherever their networks agree (paired comparison).
    blob = train_method(
        base,
        {**cfg, "training": tcfg},
        seed=derived_seed(cfg, "train", base, args.seed),
        dataset=args.dataset,
        out=Outputs(Path(args.generator), Path(args.checkpoint), Path(args.losses), Path(args.samples)),
        device=torch_device(cfg["device"]),
        features=args.features,
        latents=args.latents,
        vae_model=args.vae_model,
        ct_root=args.ct_root,
    )
    log.info(
        "%s (seed %d): wrote %s after %.1f s of training", args.method, args.seed, args.generator, blob["train_seconds"]
    )
