"""Benchmark: CT VAE training throughput (images/s), against a plain conv autoencoder.

The reference is the same network trained the same way without the variational part (mu
only, no log sigma^2 head, no sampling, no KL), measured in the same run with the same step
count, so the ratio says what the VAE machinery costs and is robust to a busy machine.

    python bench/bench_vae.py [--size 64] [--base 16] [--batch 16] [--steps 30] [--threads 2] [--device cpu]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from positrongan.models.vae import ConvVAE, vae_loss


def _time_steps(step, steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64, help="image size (dataset.image_size)")
    ap.add_argument("--base", type=int, default=16, help="vae.base_channels")
    ap.add_argument("--latent", type=int, default=64, help="vae.latent_dim")
    ap.add_argument("--batch", type=int, default=16, help="vae.batch_size")
    ap.add_argument("--steps", type=int, default=30, help="timed optimiser steps per model")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = (torch.rand(args.batch, 1, args.size, args.size, device=device) * 2 - 1).contiguous()

    vae = ConvVAE(args.size, args.latent, args.base).to(device).train()
    opt_v = torch.optim.Adam(vae.parameters(), lr=1e-3)

    def vae_step():
        recon, mu, logvar = vae(x)
        loss, _, _ = vae_loss(recon, x, mu, logvar, 1.0)
        opt_v.zero_grad(set_to_none=True)
        loss.backward()
        opt_v.step()

    ae = ConvVAE(args.size, args.latent, args.base).to(device).train()
    ae_params = [p for n, p in ae.named_parameters() if not n.startswith("fc_logvar")]
    opt_a = torch.optim.Adam(ae_params, lr=1e-3)

    def ae_step():
        recon = ae.decode(ae.fc_mu(ae.encoder(x)))
        loss = torch.sum((recon - x).pow(2).flatten(1), dim=1).mean()
        opt_a.zero_grad(set_to_none=True)
        loss.backward()
        opt_a.step()

    # Interleave two rounds of each so a load spike on a shared machine hits both alike.
    t_vae = t_ae = 0.0
    for _ in range(2):
        t_vae += _time_steps(vae_step, args.steps // 2, args.warmup, device)
        t_ae += _time_steps(ae_step, args.steps // 2, args.warmup, device)
    n_img = 2 * (args.steps // 2) * args.batch
    out = {
        "benchmark": "ct_vae_training",
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": args.threads,
        "image_size": args.size,
        "base_channels": args.base,
        "latent_dim": args.latent,
        "batch_size": args.batch,
        "steps": 2 * (args.steps // 2),
        "parameters": sum(p.numel() for p in vae.parameters()),
        "vae_images_per_s": round(n_img / t_vae, 1),
        "plain_ae_images_per_s": round(n_img / t_ae, 1),
        "vae_over_ae_time": round(t_vae / t_ae, 3),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
