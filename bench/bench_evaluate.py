"""Benchmark of the evaluation stage (prints JSON).

1. Nearest-training-image MS-SSIM, all pairs: our precomputed-statistics path vs calling
   pytorch-msssim on every pair, measured in the same run (at 112 px, the smallest size
   pytorch-msssim accepts for our 3-scale, 7-tap setting), with the largest difference.
2. Fréchet distance: ours (nuclear norm of the N_a x N_b cross product) vs pytorch-fid's
   ``calculate_frechet_distance`` (2048-d sqrtm; here 512-d to keep the run short: sqrtm is cubic).
3. The whole stage at the default config (4 methods x 256 samples, 64 px) on synthetic images:
   wall time per metric and in total.

Run: OMP_NUM_THREADS=1 python bench/bench_evaluate.py [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def discs(rng, n, size, noise=0.05):
    yy, xx = np.mgrid[:size, :size] / size
    a = rng.uniform(0.25, 0.35, (n, 1, 1))
    b = rng.uniform(0.18, 0.28, (n, 1, 1))
    img = (((xx - 0.5) / a) ** 2 + ((yy - 0.5) / b) ** 2 < 1) * 0.8
    return np.clip(img + noise * rng.standard_normal((n, size, size)), 0, 1).astype(np.float32)


def bench_matrix(rng) -> dict:
    from pytorch_msssim import ms_ssim as reference

    from positrongan.metrics.msssim import MSSSIMSettings, ms_ssim_matrix

    s = MSSSIMSettings(3, 7, 1.5)
    gen, train = discs(rng, 64, 112), discs(rng, 64, 112)
    t0 = time.perf_counter()
    ours = ms_ssim_matrix(gen, train, s)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    tb = torch.from_numpy(train)[:, None]
    ref = np.stack(
        [
            reference(
                torch.from_numpy(g)[None, None].expand(len(train), 1, -1, -1),
                tb,
                data_range=1.0,
                size_average=False,
                win_size=s.window,
                win_sigma=s.sigma,
                weights=list(s.weights),
            ).numpy()
            for g in gen
        ]
    )
    t_ref = time.perf_counter() - t0
    return {
        "pairs": int(ours.size),
        "size_px": 112,
        "ours_s": round(t_ours, 3),
        "pytorch_msssim_s": round(t_ref, 3),
        "speedup": round(t_ref / t_ours, 2),
        "max_abs_diff": float(np.abs(ours - ref).max()),
    }


def bench_frechet(rng, dim: int = 512) -> dict:
    import warnings

    from pytorch_fid.fid_score import calculate_frechet_distance

    from positrongan.metrics.fid import frechet_distance

    mix = rng.standard_normal((dim, dim)) / np.sqrt(dim)
    a = np.maximum(rng.standard_normal((256, dim)) @ mix, 0)
    b = np.maximum(rng.standard_normal((60, dim)) @ mix + 0.3, 0)
    t0 = time.perf_counter()
    ours = frechet_distance(a, b)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ref = calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    t_ref = time.perf_counter() - t0
    return {
        "n": [256, 60],
        "dim": dim,
        "ours_s": round(t_ours, 4),
        "pytorch_fid_s": round(t_ref, 3),
        "speedup": round(t_ref / t_ours, 1),
        "rel_diff": abs(ours - ref) / abs(ref),
    }


def bench_stage(rng) -> dict:
    from positrongan.config import derived_seed, validate
    from positrongan.io import save_npz
    from positrongan.metrics.evaluation import run_evaluation

    cfg = validate({"device": "cpu"})
    methods = cfg["training"]["methods"]
    records = []

    class Grab(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logging.getLogger("positrongan").addHandler(Grab())
    logging.getLogger("positrongan").setLevel(logging.INFO)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        n_train, n_test = 200, 60
        save_npz(
            root / "positron.npz",
            images=discs(rng, n_train + n_test, 64),
            split=np.array(["train"] * n_train + ["test"] * n_test),
        )
        paths = []
        for m in methods:
            paths.append(root / f"{m}.npz")
            save_npz(paths[-1], images=discs(rng, 256, 64), method=np.array(m))
        t0 = time.perf_counter()
        df = run_evaluation(
            dataset=root / "positron.npz",
            samples=paths,
            methods=methods,
            ev=cfg["evaluation"],
            device=torch.device("cpu"),
            seed=lambda *k: derived_seed(cfg, "evaluate", *k),
            metrics_csv=root / "metrics.csv",
            table_md=root / "table.md",
            grid_png=root / "grid.png",
        )
        total = time.perf_counter() - t0
    per_metric: dict[str, float] = {}
    for msg in records:
        if " done in " in msg:
            name = msg.split(": ")[1].split(" done")[0]
            per_metric[name] = per_metric.get(name, 0.0) + float(msg.split(" done in ")[1].split(" s")[0])
    return {
        "methods": len(methods),
        "samples": 256,
        "size_px": 64,
        "n_train": n_train,
        "n_test": n_test,
        "total_s": round(total, 2),
        "per_metric_s": {k: round(v, 2) for k, v in per_metric.items()},
        "fid_status": str(df["fid_status"].iloc[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    out = {
        "threads": args.threads,
        "msssim_matrix": bench_matrix(rng),
        "frechet": bench_frechet(rng),
        "stage": bench_stage(rng),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
