"""``positrongan sample``: draw ``evaluation.samples`` images from a trained generator."""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np

from ..config import derived_seed
from ..errors import ConfigError
from ..io import save_npz
from ..metrics.inputs import INFO_KEYS

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--method", required=True, help="a registered method (ours, vae, dcgan, wgan_gp) or a training.variants name"
    )
    parser.add_argument("--seed", type=int, default=0, help="the training seed of the generator (training.seeds)")
    parser.add_argument("--generator", required=True, metavar="PT", help="train/{method}/seed{seed}/generator.pt")
    parser.add_argument("--latents", metavar="NPZ", help="vae/latents.npz (ours, training.sample_latent = ct)")
    parser.add_argument("--out", required=True, metavar="NPZ", help="samples/{method}_seed{seed}.npz to write")


def run(args: argparse.Namespace, cfg: dict) -> None:
    from ..runtime import torch_device
    from ..train.latents import load_latents
    from ..train.registry import get, resolve
    from ..train.sampling import generate, load_generator

    device = torch_device(cfg["device"])
    n = cfg["evaluation"]["samples"]
    base, tcfg = resolve(cfg["training"], args.method)
    latent = tcfg["sample_latent"]
    net, meta = load_generator(args.generator, device)
    if meta["method"] != base:
        raise ConfigError(f"--method {args.method} ({base}) but {args.generator} holds a '{meta['method']}' generator")
    # Only methods with a memory draw their queries from the CT latents, and only when they were
    # trained on them (training.query = ct); the others, from N(0, I).
    latent = latent if get(base).memory and meta.get("query", "ct") == "ct" else "prior"
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
        derived_seed(cfg, "sample", args.method, args.seed),
        latent=latent,
        ct=ct,
    )
    seconds = time.perf_counter() - t0
    save_npz(
        args.out,
        images=images,
        method=np.array(args.method),
        seed=np.int64(args.seed),
        variant=np.array(meta.get("variant", args.method)),
        latent=np.array(latent),
        train_seconds=np.float64(meta["train_seconds"]),
        iterations=np.int64(meta["iterations"]),
        samples_per_second=np.float64(n / seconds),
        # What the evaluation table reports beside the metrics (absent from older generator files).
        **{
            k: np.float64(meta[k])
            for k in INFO_KEYS
            if k in meta
        },
    )
    log.info(
        "%s seed %d: %d samples in %.2f s (%.0f /s) -> %s", args.method, args.seed, n, seconds, n / seconds, args.out
    )
