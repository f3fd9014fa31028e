"""Benchmark: MLEM with the cached sparse system model (torch) against an MLEM built on
scikit-image's radon/iradon, on the same phantom in the same run; peak memory of the model.

Both reconstruct every plane of the default grid (127 planes of 96 x 96 over 96 mm) from
Poisson data of the same tube phantom with the same expected counts per plane; each method's
data come from its own projector (ring LORs for ours, 184 parallel angles for radon). Prints
one JSON object.

    OMP_NUM_THREADS=1 python bench/bench_recon.py [--iterations 5] [--skimage-iterations 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import tracemalloc

import numpy as np


def phantom(grid: int, fov: float, planes: int) -> np.ndarray:
    """Elliptical fluid-filled tube with a blockage, the same in every plane but shifted along z."""
    c = -fov / 2 + (np.arange(grid) + 0.5) * fov / grid
    x, y = np.meshgrid(c, c)
    vol = np.zeros((planes, grid, grid), np.float32)
    for p in range(planes):
        img = ((x / 30) ** 2 + (y / 22) ** 2 < 1).astype(np.float32)
        img[((x - 12 + 0.05 * p) ** 2 + (y - 5) ** 2) < 36] = 0
        vol[p] = img
    return vol


def bench_ours(cfg, vol, counts_per_plane, iterations, accuracy_iterations, device, rng):
    from positrongan.geometry.scanner import Scanner
    from positrongan.recon.mlem import reconstruct
    from positrongan.recon.projector import TorchProjector, build_system_model

    scanner = Scanner.from_config(cfg["scanner"])
    tracemalloc.start()
    t0 = time.perf_counter()
    model = build_system_model(scanner, cfg["reconstruction"], cfg["scanner"])
    build_s = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    mat = model.matrix
    proj = TorchProjector(model, "cpu", 1)
    torch_bytes = proj.memory_bytes()
    planes = len(vol)
    line = (mat @ vol.reshape(planes, -1).T).T.reshape(planes, *model.sino_shape) * model.plane_weight[:, None, None]
    data = rng.poisson(line * (counts_per_plane / line.sum((1, 2), keepdims=True))).astype(np.float32)
    out = {
        "build_seconds": build_s,
        "model_build_peak_mb": peak / 1e6,
        "model_matrix_mb": (mat.data.nbytes + mat.indices.nbytes + mat.indptr.nbytes) / 1e6,
        "model_torch_fwd_plus_back_mb": torch_bytes / 1e6,
        "nnz": int(mat.nnz),
        "sinogram": list(model.sino_shape),
    }
    for dev in device:
        reconstruct(model, data, 1, 1, device=dev, show_progress=False)  # warm-up (allocations, CUDA init)
        c0 = time.process_time()
        res = reconstruct(model, data, iterations, 1, device=dev, show_progress=False)
        out[f"seconds_per_iteration_{dev}"] = res.seconds / iterations
        if dev == "cpu":
            out["cpu_seconds_per_iteration"] = (time.process_time() - c0) / iterations
    # Accuracy after the reference's iteration count, so both are compared at the same point.
    res = reconstruct(model, data, accuracy_iterations, 1, device="cpu", show_progress=False)
    out["rel_rmse"] = _rel_rmse(res.image, vol)
    return out


def _rel_rmse(img, ref):
    """RMSE inside the tube relative to its mean, after a least-squares gain per plane (every
    plane has the same expected counts here, so each method's planes have their own scale)."""
    inside = ref.sum(0) > 0
    err = [np.sqrt(np.mean((_scaled(i, r) - r)[inside] ** 2)) / r[inside].mean() for i, r in zip(img, ref)]
    return float(np.mean(err))


def _scaled(img, ref):
    # Each method has its own intensity scale: compare shapes after a least-squares gain.
    return img * (img * ref).sum() / max((img * img).sum(), 1e-30)


def bench_skimage(vol, counts_per_plane, iterations, n_angles, rng):
    from skimage.transform import iradon, radon

    theta = np.arange(n_angles) * 180.0 / n_angles
    planes = len(vol)
    data = []
    for p in range(planes):
        s = radon(vol[p], theta=theta, circle=True)
        data.append(rng.poisson(s * counts_per_plane / s.sum()).astype(np.float64))
    t0, c0 = time.perf_counter(), time.process_time()
    image = np.zeros(vol.shape)
    g = vol.shape[1]
    disc = np.hypot(*np.meshgrid(np.arange(g) - g / 2 + 0.5, np.arange(g) - g / 2 + 0.5)) < g / 2 - 1
    for p in range(planes):
        y = data[p]
        sens = iradon(np.ones_like(y), theta=theta, filter_name=None, circle=True)
        x = disc * y.sum() / radon(disc * 1.0, theta=theta, circle=True).sum()
        for _ in range(iterations):
            fwd = radon(x, theta=theta, circle=True)
            ratio = np.where(fwd > 0, y / np.maximum(fwd, 1e-30), 0)
            x = np.where(
                sens > 0, x * iradon(ratio, theta=theta, filter_name=None, circle=True) / np.maximum(sens, 1e-30), 0
            )
        image[p] = x
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "seconds_per_iteration": seconds / iterations,
        "cpu_seconds_per_iteration": cpu / iterations,
        "rel_rmse": _rel_rmse(image, vol),
        "angles": n_angles,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5, help="MLEM iterations timed for ours")
    parser.add_argument("--skimage-iterations", type=int, default=2, help="MLEM iterations timed for skimage")
    parser.add_argument("--counts-per-plane", type=float, default=2000.0)
    args = parser.parse_args()

    import torch

    from positrongan.config import load

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    cfg = load()
    rc, sc = cfg["reconstruction"], cfg["scanner"]
    planes = 2 * sc["rings"] - 1
    vol = phantom(rc["grid"], rc["fov_mm"], planes)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    ours = bench_ours(
        cfg, vol, args.counts_per_plane, args.iterations, args.skimage_iterations, devices, np.random.default_rng(0)
    )
    ref = bench_skimage(
        vol, args.counts_per_plane, args.skimage_iterations, sc["crystals_per_ring"], np.random.default_rng(0)
    )
    result = {
        "benchmark": "recon_mlem",
        "planes": planes,
        "grid": rc["grid"],
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "ours": ours,
        "skimage_radon_iradon": ref,
        "speedup_cpu": ref["seconds_per_iteration"] / ours["seconds_per_iteration_cpu"],
        "speedup_cpu_time": ref["cpu_seconds_per_iteration"] / ours["cpu_seconds_per_iteration"],
    }
    if "seconds_per_iteration_cuda" in ours:
        result["speedup_cuda"] = ref["seconds_per_iteration"] / ours["seconds_per_iteration_cuda"]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
