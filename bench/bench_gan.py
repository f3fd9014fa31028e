"""Training speed of ours and the baselines at the default config (CPU, one thread by default).

Every method trains on the same synthetic 64 px ring images (a stand-in for positron
slices). The methods are timed round-robin (a few steps each, repeated) so machine load
hits them alike, and each is reported as seconds per generator update, iterations per
second, its ratio to the DCGAN baseline's update measured in the same run (the reference),
and the projected time of the default budget (``training.iterations``).

    python bench/bench_gan.py                   # CPU, 1 thread, default config
    python bench/bench_gan.py --size 256 --device cuda --rounds 5 --steps 10

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np
import torch

from positrongan.config import validate
from positrongan.runtime import torch_device
from positrongan.train.registry import METHODS, build_trainer
from positrongan.train.latents import CTLatents


def rings(n: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    out = []
    for _ in range(n):
        a, b = rng.uniform(0.25, 0.4), rng.uniform(0.2, 0.35)
        r = np.sqrt((xx / a) ** 2 + (yy / b) ** 2)
        img = np.exp(-(((r - 1) / 0.2) ** 2)) + 0.1 * rng.random((size, size))
        out.append(img / img.max())
    return np.array(out, dtype=np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=None, help="image size (default: dataset.image_size)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=4, help="round-robin rounds")
    parser.add_argument("--steps", type=int, default=5, help="steps per method per round")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    cfg = validate({"device": args.device})
    tcfg = cfg["training"]
    size = args.size or cfg["dataset"]["image_size"]
    device = torch_device(args.device)
    images = (torch.from_numpy(rings(150, size))[:, None] * 2 - 1).to(device)
    memory = torch.from_numpy(rings(150, size, seed=1).reshape(150, -1)[:, : cfg["features"]["components"]] * 10)
    d = cfg["vae"]["latent_dim"]
    latents = CTLatents(torch.randn(400, d), torch.full((400, d), -2.0))
    torch.manual_seed(0)
    trainers = {m: build_trainer(m, images, tcfg, device, memory=memory, latents=latents) for m in args.methods}
    batch = tcfg["batch_size"]

    def run(m: str, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            trainers[m].step(images[torch.randint(len(images), (batch,), device=device)])
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / n

    for m in args.methods:  # warm-up (allocator, autotuning)
        run(m, 2)
    times: dict[str, list[float]] = {m: [] for m in args.methods}
    for _ in range(args.rounds):
        for m in args.methods:
            times[m].append(run(m, args.steps))
    ref = statistics.median(times["dcgan"]) if "dcgan" in times else None
    result = {
        "benchmark": "gan_training",
        "image_size": size,
        "batch_size": batch,
        "device": str(device),
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "default_iterations": tcfg["iterations"],
        "reference": "dcgan generator update (one D step + one G step) at the same size, same run",
        "methods": {},
    }
    for m, ts in times.items():
        s = statistics.median(ts)
        result["methods"][m] = {
            "seconds_per_iteration": round(s, 4),
            "iterations_per_second": round(1 / s, 2),
            "ratio_to_dcgan": round(s / ref, 2) if ref else None,
            "projected_default_seconds": round(s * tcfg["iterations"], 1),
            "spread": [round(min(ts), 4), round(max(ts), 4)],
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
