"""``positrongan train``: train one method (ours or a baseline) on the positron images, with
checkpoints and resume; writes generator.pt, checkpoint.pt, losses.csv and samples.png."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..config import derived_seed
from ..errors import ConfigError

log = logging.getLogger(__name__)

METHODS = ("ours", "vae", "dcgan", "wgan_gp")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", required=True, choices=METHODS)
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
    import torch

    from ..runtime import torch_device
    from ..train.data import ct_latents, memory_vectors, training_images
    from ..train.factory import build_trainer
    from ..train.latents import CTEncoderLatents, CTLatents
    from ..train.loop import Outputs, train

    tcfg = cfg["training"]
    method = args.method
    device = torch_device(cfg["device"])
    seed = derived_seed(cfg, "train", method)
    images_np = training_images(args.dataset)
    images = (torch.from_numpy(images_np)[:, None] * 2 - 1).to(device)
    size = images.shape[-1]
    log.info("%s: %d training images of %d px on %s", method, len(images), size, device)

    memory = latents = None
    extra = ()
    if method == "ours":
        if not args.features or not args.latents:
            raise ConfigError("method 'ours' needs --features and --latents")
        memory_np = memory_vectors(args.features)
        memory = torch.from_numpy(memory_np)
        if tcfg["train_encoder"]:
            if not args.vae_model or not args.ct_root:
                raise ConfigError("config key 'training.train_encoder' = true needs --vae-model and --ct-root")
            from ..data.ct import load_corpus
            from ..models.vae import load_vae

            vae = load_vae(args.vae_model, device).train()
            ct = torch.from_numpy(load_corpus(cfg["ct"], args.ct_root, size))[:, None].float().to(device)
            latents = CTEncoderLatents(vae, ct)
            extra = (memory_np, ct.cpu().numpy())
        else:
            mu, logvar = ct_latents(args.latents)
            latents = CTLatents(torch.from_numpy(mu), torch.from_numpy(logvar))
            extra = (memory_np, mu, logvar)
    torch.manual_seed(seed)  # network initialisation
    trainer = build_trainer(method, images, tcfg, device, memory=memory, latents=latents)
    out = Outputs(Path(args.generator), Path(args.checkpoint), Path(args.losses), Path(args.samples))
    blob = train(trainer, images, tcfg, out, seed, data_fingerprint=extra)
    log.info("%s: wrote %s after %.1f s of training", method, args.generator, blob["train_seconds"])
