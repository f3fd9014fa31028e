"""Train and apply every enhancement method (``positrongan enhance``) for several seeds, several
runs at once, and print one JSON line per run with its training time and inference time per
slice; then, with --evaluate, score them all (``positrongan evaluate-enhance``).

Each run is its own process with ``--threads`` threads (1: the one-core figure of
docs/benchmarks.md), so ``--jobs`` runs share the machine without sharing cores.

    python bench/enhance_runs.py --dataset results/dataset/positron.npz \
        --features results/features/positron_features.npz --out /tmp/enh \
        --methods ours unet pix2pix gaussian --seeds 0 1 2 --jobs 4 --threads 1 --device cpu
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def one(args, method: str, seed: int) -> dict:
    out = Path(args.out) / method / f"seed{seed}.npz"
    cmd = [
        sys.executable,
        "-m",
        "positrongan",
        "enhance",
        "--method",
        method,
        "--seed",
        str(seed),
        "--dataset",
        args.dataset,
        "--out",
        str(out),
        "--threads",
        str(args.threads),
        "--set",
        f"device={args.device}",
        *(c for s in args.set for c in ("--set", s)),
    ]
    if args.config:
        cmd += ["--config", args.config]
    if method == "ours":
        cmd += ["--features", args.features]
    if args.figures:
        cmd += ["--figure", str(out.with_suffix(".png"))]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    row = {"method": method, "seed": seed, "rc": proc.returncode, "wall_s": round(time.perf_counter() - t0, 2)}
    if proc.returncode:
        row["error"] = proc.stderr[-2000:]
        return row
    e = np.load(out)
    row.update(
        train_s=round(float(e["train_seconds"]), 2),
        infer_ms_per_slice=round(1e3 * float(e["infer_seconds_per_slice"]), 3),
        device=str(e["device"]),
        threads=int(e["threads"]),
        out=str(out),
    )
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--features", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--config", default="config/config.yaml")
    p.add_argument("--methods", nargs="+", default=["ours", "unet", "pix2pix", "gaussian"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    p.add_argument("--figures", action="store_true", help="also write each run's figure beside its npz")
    p.add_argument("--set", action="append", default=[], help="config override KEY=VALUE (repeatable)")
    args = p.parse_args()
    runs = [(m, s) for m in args.methods for s in (args.seeds if m != "gaussian" else [0])]
    with ThreadPoolExecutor(args.jobs) as pool:
        for row in pool.map(lambda ms: one(args, *ms), runs):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
