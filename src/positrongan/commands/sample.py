"""``positrongan sample``: draw ``evaluation.samples`` images from a trained generator."""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np

from ..config import derived_seed
from ..errors import ConfigError
from ..io import save_npz

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..train.registry import METHODS

    parser.add_argument("--method", required=True, choices=list(METHODS))
    parser.add_argument("--generator", required=True, metavar="PT", help="train/{method}/generator.pt")
    parser.add_argument("--latents", metavar="NPZ", help="vae/latents.npz (ours, training.sample_latent = ct)")
    parser.add_argument("--out", required=True, metavar="NPZ", help="samples/{method}.npz to write")


def run(args: argparse.Namespace, cfg: dict) -> None:
    from ..runtime import torch_device
    from ..train.latents import load_latents
    from ..train.registry import get
    from ..train.sampling import generate, load_generator

    device = torch_device(cfg["device"])
    n = cfg["evaluation"]["samples"]
    latent = cfg["training"]["sample_latent"]
    net, meta = load_generator(args.generator, device)
    if meta["method"] != args.method:
        raise ConfigError(f"--method {args.method} but {args.generator} holds a '{meta['method']}' generator")
    # Only methods with a memory draw their queries from the CT latents; the others, from N(0, I).
    latent = latent if get(args.method).memory else "prior"
    ct = None
    if latent == "ct" and "ct_mu" not in meta:
        if not args.latents:
            raise ConfigError("training.sample_latent = 'ct' needs --latents (vae/latents.npz)")
        ct = load_latents(args.latents)
    t0 = time.perf_counter()
    images = generate(
        net,
        meta,
        n,
        derived_seed(cfg, "sample", args.method),
        latent=latent,
        ct=ct,
    )
    seconds = time.perf_counter() - t0
    save_npz(
        args.out,
        images=images,
        method=np.array(args.method),
        variant=np.array(meta.get("variant", args.method)),
        latent=np.array(latent),
        train_seconds=np.float64(meta["train_seconds"]),
        iterations=np.int64(meta["iterations"]),
        samples_per_second=np.float64(n / seconds),
    )
    log.info("%s: %d samples in %.2f s (%.0f /s) -> %s", args.method, n, seconds, n / seconds, args.out)
