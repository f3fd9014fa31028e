"""Benchmark of the mask-conditioned generator (prints JSON): time per generated slice, and
time per training step (generator + PatchGAN), on one thread at the default config.

The network's cost does not depend on its weights, so an untrained generator is timed; the
truth and label maps are those of a dataset when one is given, else synthetic discs.

Run: OMP_NUM_THREADS=1 python bench/bench_conditional.py [--dataset results/dataset/positron.npz]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from positrongan.config import validate
from positrongan.detect.conditional import ConditionalGenerator, generate, train_conditional


def maps(args, size):
    if args.dataset:
        d = np.load(args.dataset)
        return d["images"][: args.n], d["truth"][: args.n], d["defect_labels"][: args.n]
    yy, xx = np.mgrid[:size, :size]
    truth = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.35 * size) ** 2).astype(np.float32)
    truth = np.repeat(truth[None], args.n, 0)
    return truth * 0.8, truth, np.zeros(truth.shape, np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dataset", help="a dataset/positron.npz (its first --n slices)")
    ap.add_argument("--n", type=int, default=256, help="slices generated")
    ap.add_argument("--steps", type=int, default=20, help="training steps timed")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = validate({})["detection"]["conditional"]
    images, truth, labels = maps(args, 64)
    size = truth.shape[-1]
    net = ConditionalGenerator(size, g["channels"], g["depth"], kernel=g["kernel"]).eval()
    generate(net, truth[:8], labels[:8], seed=0)  # warm-up
    t0 = time.perf_counter()
    generate(net, truth, labels, seed=0)
    per_slice = (time.perf_counter() - t0) / len(truth)
    t0 = time.perf_counter()
    kw = {k: g[k] for k in ("batch_size", "lr", "channels", "depth", "d_channels", "lambda_l1", "lambda_adv", "kernel")}
    train_conditional(images, truth, labels, iterations=args.steps, seed=0, **kw)
    per_step = (time.perf_counter() - t0) / args.steps
    print(
        json.dumps(
            {
                "image_size": int(size),
                "threads": args.threads,
                "generate_ms_per_slice": round(1e3 * per_slice, 3),
                "slices": int(len(truth)),
                "train_ms_per_step": round(1e3 * per_step, 1),
                "batch_size": g["batch_size"],
                "steps_default": g["iterations"],
                "train_s_default_estimate": round(per_step * g["iterations"], 1),
            }
        )
    )


if __name__ == "__main__":
    main()
