"""Benchmark: seconds per 3D OSEM iteration (reconstruction.mode: 3d) on the CPU and on CUDA, in the
same run, at the default scanner and grid.

The cost of an iteration does not depend on the counts (the projector visits every LOR of the
3D sinogram), so the data are synthetic: a uniform fluid cylinder with a cold rod, forward
projected and Poisson-sampled to the default scan's ~7e6 prompts. This needs neither a ROOT file
nor uproot, so it runs on a bare GPU machine::

    python -c "import json, positrongan.config as c; print(json.dumps(c.load(['config/config.yaml'])))" > /tmp/cfg.json
    python bench/bench_recon3d_device.py --config-json /tmp/cfg.json --out result.json

Prints (and writes) one JSON object: per device, setup seconds (projector + sensitivity image),
seconds per iteration (wall, synchronised), and the relative difference of the CUDA image from
the CPU image after the same iterations.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np


def phantom(proj) -> np.ndarray:
    """Uniform cylinder (r 30 mm) with a cold rod (r 7.5 mm), in the central half of the planes."""
    planes, ny, nx = proj.image_grid.shape
    pix = proj.image_grid.voxel_mm[1]
    c = (np.arange(nx) - (nx - 1) / 2) * pix
    rr = np.hypot(c[None, :], c[:, None])
    rod = np.hypot(c[None, :] - 12.0, c[:, None])
    sl = (rr <= 30.0) & ~(rod <= 7.5)
    x = np.zeros((planes, ny, nx), np.float32)
    x[planes // 4 : 3 * planes // 4] = sl
    return x


def run_device(cfg, device: str, threads: int, iterations: int, prompts: float, seed: int):
    import torch

    from positrongan.geometry.scanner import Scanner
    from positrongan.recon.osem3d import reconstruct_3d
    from positrongan.recon.projector3d import RingProjector3D

    torch.set_num_threads(threads)
    rc = cfg["reconstruction"]
    scanner = Scanner.from_config(cfg["scanner"])
    t0 = time.perf_counter()
    proj = RingProjector3D(
        scanner,
        rc["fov_mm"],
        rc["grid"],
        rc["doi_mm"],
        device,
        rc["subsets"],
        rc["step_voxels"],
        rc["lors_per_batch"],
    )
    x = phantom(proj)
    ybar = proj.forward(torch.from_numpy(x).to(proj.device)).cpu().numpy().astype(np.float64)
    ybar *= prompts / ybar.sum()
    y = np.random.default_rng(seed).poisson(ybar).astype(np.float32)
    if device == "cuda":
        torch.cuda.synchronize()
    setup = time.perf_counter() - t0
    # One warm-up iteration (CUDA context, allocator, kernels), then the timed run.
    reconstruct_3d(proj, y, 1, show_progress=False)
    res = reconstruct_3d(proj, y, iterations, show_progress=False)
    out = {
        "device": device,
        "threads": threads,
        "setup_seconds_incl_data": setup,
        "seconds_per_iteration": res.seconds / iterations,
        "iterations": iterations,
        "subsets": rc["subsets"],
        "lors": proj.shape[0] * proj.shape[1],
        "prompts": float(y.sum()),
        "loglik_monotone": bool(np.all(np.diff(res.loglik) >= -1e-6 * np.abs(res.loglik[:-1]))),
    }
    if device == "cuda":
        out["gpu"] = torch.cuda.get_device_name(0)
        out["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out, res.image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-json", required=True, help="a resolved config as JSON")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--cpu-threads", type=int, nargs="*", default=[1])
    parser.add_argument("--prompts", type=float, default=7e6)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import torch

    with open(args.config_json) as f:
        cfg = json.load(f)
    result = {
        "benchmark": "recon_3d_device",
        "grid": cfg["reconstruction"]["grid"],
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "runs": [],
    }
    images = {}
    for threads in args.cpu_threads:
        r, images[f"cpu{threads}"] = run_device(cfg, "cpu", threads, args.iterations, args.prompts, 0)
        result["runs"].append(r)
    if torch.cuda.is_available():
        r, images["cuda"] = run_device(cfg, "cuda", 1, args.iterations, args.prompts, 0)
        result["runs"].append(r)
        if images.keys() - {"cuda"}:
            ref = images[next(k for k in images if k != "cuda")]
            result["cuda_vs_cpu_max_relative_difference"] = float(
                np.abs(images["cuda"] - ref).max() / max(np.abs(ref).max(), 1e-30)
            )
        cpu = [r for r in result["runs"] if r["device"] == "cpu"]
        if cpu:
            best = min(r["seconds_per_iteration"] for r in cpu)
            result["cuda_speedup_vs_best_cpu"] = best / result["runs"][-1]["seconds_per_iteration"]
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
