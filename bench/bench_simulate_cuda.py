"""The GPU engine (``simulation.kernel: cuda``) against the CPU engine on the same machine (prints JSON).

1. The decay kernel alone (no transfers, no packing): decays per second of a chunk of 2^22 for
   64, 128 and 256 threads per block, and the kernel's registers and local memory per thread.
2. Chunks: decays per second of ``simulate_chunk`` (the kernels, the transfers and the packing of
   the singles; wall time, after a warm-up that compiles or loads the kernels) for chunks of
   2^20, 2^22 and 2^24 decays, against the CPU engine's decays per CPU-second on one core
   (process time, a chunk of 2^20).
3. Whole scan: the default scan (the config's activity x acquisition time) through
   :func:`.driver.run_scan` with the GPU engine and ``--chunk`` decays per chunk: wall seconds,
   decays per wall-second, and the CPU seconds of each stage (the 176Lu background, time sorting,
   coincidences and writing stay on the CPU), against the CPU engine's whole scan of
   ``--cpu-decays`` scaled to the same decays.

Usage: python bench/bench_simulate_cuda.py [--chunk 4194304] [--cpu-decays 4e6] [--config config/config.yaml]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _engines(cfg, kernels=("numba", "cuda")):
    from positrongan.simulate.driver import draw_phantom, engine_parts, make_engine

    parts = engine_parts(cfg, draw_phantom(cfg, "scan_000"))
    return {k: make_engine(k, *parts) for k in kernels}


def kernel_only(cfg) -> dict:
    from numba import cuda

    from positrongan.simulate import fast_cuda as fc

    eng = _engines(cfg, ("cuda",))["cuda"]
    eng.compile()
    n = 2**22
    times = np.sort(np.random.default_rng(0).uniform(0.0, n / 4e6 * 1e9, n))
    d_times, d_count = cuda.to_device(times), cuda.device_array(n, np.int64)
    cols = [cuda.device_array((rows, n * fc.SLOTS) if rows > 1 else n * fc.SLOTS, dt) for _, dt, rows in fc.COLUMNS]
    out = {}
    for threads in (64, 128, 256):
        launch = eng._decays[(n + threads - 1) // threads, threads]
        args = (d_times, 0, np.uint64(12345), fc.SLOTS, *eng._tables, d_count, *cols)
        launch(*args)  # warm
        cuda.synchronize()
        walls = []
        for _ in range(3):
            t = time.perf_counter()
            launch(*args)
            cuda.synchronize()
            walls.append(time.perf_counter() - t)
        out[f"threads_{threads}_decays_per_second"] = n / min(walls)
    kernel = next(iter(eng._decays.overloads.values()))
    for attr in ("regs_per_thread", "local_mem_per_thread", "max_threads_per_block"):
        out[attr] = getattr(kernel, attr, None)
    return out


def chunks(cfg) -> dict:
    from numba import cuda

    eng = _engines(cfg)
    for e in eng.values():
        e.compile()
    rng = np.random.default_rng(0)
    out = {}
    for n in (2**20, 2**22, 2**24):
        times = np.sort(rng.uniform(0.0, n / 4e6 * 1e9, n))
        eng["cuda"].simulate_chunk(times, 0, rng)  # warm: allocations of this size
        walls, singles = [], 0
        for _ in range(3):
            cuda.synchronize()
            t = time.perf_counter()
            s = eng["cuda"].simulate_chunk(times, 0, rng)
            cuda.synchronize()
            walls.append(time.perf_counter() - t)
            singles = s["EventID"].size
        out[f"cuda_chunk_{n}"] = {
            "wall_s": [round(w, 4) for w in walls],
            "decays_per_second": n / statistics.median(walls),
            "singles_per_decay": singles / n,
        }
    n = 2**20
    times = np.sort(rng.uniform(0.0, n / 4e6 * 1e9, n))
    cpu = []
    for _ in range(3):
        t = time.process_time()
        s = eng["numba"].simulate_chunk(times, 0, rng)
        cpu.append(time.process_time() - t)
    out["numba_chunk_1048576"] = {
        "cpu_s": [round(c, 4) for c in cpu],
        "decays_per_cpu_second": n / min(cpu),
        "singles_per_decay": s["EventID"].size / n,
    }
    out["ratio_cuda_2^24_to_one_core"] = out[f"cuda_chunk_{2**24}"]["decays_per_second"] / (n / min(cpu))
    return out


def whole_scan(cfg, kernel: str, decays: float, chunk: int, tmp: Path) -> dict:
    from positrongan.simulate.driver import draw_phantom, run_scan

    cfg = {**cfg, "simulation": {**cfg["simulation"], "kernel": kernel, "chunk_decays": chunk}}
    full = cfg["phantom"]["activity_bq"] * cfg["phantom"]["acquisition_s"]
    cfg["phantom"] = {**cfg["phantom"], "acquisition_s": decays / cfg["phantom"]["activity_bq"]}
    root = tmp / f"{kernel}.root"
    info = run_scan(cfg, "scan_000", draw_phantom(cfg, "scan_000"), root)
    cpu = info["cpu_seconds_by_stage"]
    scale = full / info["decays"]
    return {
        "kernel": kernel,
        "decays": info["decays"],
        "chunk_decays": chunk,
        "wall_s": round(info["seconds"], 2),
        "decays_per_wall_second": info["decays"] / info["seconds"],
        "decays_per_cpu_second_engine_sort_write": info["decays"] / (cpu["engine"] + cpu["sort"] + cpu["write"]),
        "cpu_seconds_by_stage": {k: round(v, 3) for k, v in cpu.items()},
        "wall_s_per_default_scan": round(info["seconds"] * scale, 2),
        "prompts_per_decay": info["prompts"] / info["decays"],
        "scatter_fraction": info["scatter_fraction"],
    }


def main() -> None:
    from positrongan import config as configlib

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunk", type=int, default=2**22, help="decays per GPU chunk in the whole scan")
    ap.add_argument("--cpu-decays", type=float, default=4e6, help="decays of the CPU engine's scan")
    ap.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml")
    args = ap.parse_args()
    cfg = configlib.load([args.config], overrides=["simulation.engine=fast"])
    full = cfg["phantom"]["activity_bq"] * cfg["phantom"]["acquisition_s"]
    from numba import cuda

    name = cuda.get_current_device().name
    result = {"gpu": name.decode() if isinstance(name, bytes) else str(name), "kernel_only": kernel_only(cfg)}
    result["chunks"] = chunks(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        result["scan_cuda"] = whole_scan(cfg, "cuda", full, args.chunk, Path(tmp))
        result["scan_numba"] = whole_scan(cfg, "numba", args.cpu_decays, cfg["simulation"]["chunk_decays"], Path(tmp))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
