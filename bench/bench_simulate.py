"""Benchmark of the fast simulation engine (prints JSON).

Measures, on one core (OMP_NUM_THREADS=1), for the default phantom of config/config.yaml:
- engine throughput (decays/s, CPU time; median of 3 passes, with the range) of the vectorised
  chunked engine, against two references measured in the same run: the same engine fed ONE
  decay per call (what a non-vectorised per-decay loop costs in Python) and numpy's raw RNG
  throughput for the
  random numbers one decay consumes (a floor no numpy engine can beat);
- the whole scan (engine + coincidence sorting + ROOT writing) at two decay counts a factor 10
  apart, each in a fresh process, with its peak resident memory (memory must stay flat);
- counts per scan for config/config.yaml (simulated at the default activity for a tenth of the
  acquisition and scaled by 10: at a fixed rate every count is linear in time) and for the
  paper's 600 Bq x 0.1 s (mean over seeds).

Usage: python bench/bench_simulate.py [--decays 300000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _cfg(**phantom):
    from positrongan import config

    cfg = config.load([ROOT / "config" / "config.yaml"], overrides=["simulation.engine=fast"])
    cfg["phantom"].update(phantom)
    return cfg


def engine_throughput(n_decays: int) -> dict:
    from positrongan.geometry.scanner import Scanner
    from positrongan.simulate.fast import FastEngine
    from positrongan.simulate.scan import draw_phantom

    cfg = _cfg()
    tube = draw_phantom(cfg, "scan_000")
    eng = FastEngine(tube, Scanner.from_config(cfg["scanner"]), cfg["phantom"], cfg["digitizer"], cfg["simulation"])
    rng = np.random.default_rng(0)
    chunk = cfg["simulation"]["chunk_decays"]
    times = np.sort(rng.uniform(0, 1e9, n_decays))
    eng.simulate_chunk(times[:1000], 0, rng)  # warm up (tables, caches)
    # Three passes over the same decay times (fresh random numbers each): the machine is shared,
    # so the median CPU time is reported, with the spread.
    cpus, walls = [], []
    for _ in range(3):
        c0, w0 = time.process_time(), time.perf_counter()
        singles = 0
        for a in range(0, n_decays, chunk):
            singles += eng.simulate_chunk(times[a : a + chunk], a, rng)["EventID"].size
        cpus.append(time.process_time() - c0)
        walls.append(time.perf_counter() - w0)
    cpu, wall = float(np.median(cpus)), float(np.median(walls))
    # Reference 1: one decay per call (no vectorisation), on a small subset.
    n_ref = 300
    c0 = time.process_time()
    for k in range(n_ref):
        eng.simulate_chunk(times[k : k + 1], k, rng)
    per_decay_cpu = (time.process_time() - c0) / n_ref
    # Reference 2: numpy's RNG alone, drawing as many doubles as one decay uses (~60:
    # emission, ~3 flights per photon, Klein-Nishina, crystal tracking, blurs).
    n_rng = 60 * n_decays
    c0 = time.process_time()
    for a in range(0, n_rng, 60 * chunk):
        rng.random(min(60 * chunk, n_rng - a))
    rng_cpu = time.process_time() - c0
    return {
        "decays": n_decays,
        "chunk_decays": chunk,
        "singles_per_decay": singles / n_decays,
        "engine_cpu_s": cpu,
        "engine_wall_s": wall,
        "engine_decays_per_cpu_s": n_decays / cpu,
        "engine_decays_per_cpu_s_range": [n_decays / max(cpus), n_decays / min(cpus)],
        "ref_one_decay_per_call_decays_per_cpu_s": 1.0 / per_decay_cpu,
        "speedup_vs_one_decay_per_call": (n_decays / cpu) * per_decay_cpu,
        "ref_numpy_rng_60_doubles_per_decay_decays_per_cpu_s": n_decays / rng_cpu,
        "engine_fraction_of_rng_floor": (n_decays / cpu) / (n_decays / rng_cpu),
    }


def child_scan(n_decays: int) -> dict:
    """One full scan (engine, sorter, ROOT writing) of about n_decays at the default activity."""
    from positrongan.simulate.scan import draw_phantom, run_fast

    activity = _cfg()["phantom"]["activity_bq"]
    cfg = _cfg(acquisition_s=n_decays / activity)
    tube = draw_phantom(cfg, "scan_000")
    with tempfile.TemporaryDirectory() as tmp:
        c0, w0 = time.process_time(), time.perf_counter()
        info = run_fast(cfg, "scan_000", tube, Path(tmp) / "s.root")
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        size = (Path(tmp) / "s.root").stat().st_size
    info.update(
        cpu_s=cpu,
        wall_s=wall,
        decays_per_cpu_s=info["decays"] / cpu,
        root_mb=size / 1e6,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        acquisition_s=cfg["phantom"]["acquisition_s"],
    )
    return info


def counts(activity: float, seconds: float, scale: float, seeds: int) -> dict:
    from positrongan.simulate.scan import draw_phantom, run_fast

    totals: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for s in range(seeds):
            cfg = _cfg(activity_bq=activity, acquisition_s=seconds)
            cfg["seed"] = s
            info = run_fast(cfg, "scan_000", draw_phantom(cfg, "scan_000"), Path(tmp) / f"{s}.root")
            for k in ("decays", "singles", "prompts", "trues", "scatters", "randoms", "delayed"):
                totals[k] = totals.get(k, 0) + (info[k] or 0) * scale / seeds
    return {k: round(v, 1) for k, v in totals.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--decays", type=int, default=300_000, help="decays of the smaller full-scan run (the other is 10x)"
    )
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="skip the 10x run and the default-config counts")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child_scan(args.child)))
        return
    import logging

    logging.disable(logging.INFO)
    out = {"machine": {"cpu_count": os.cpu_count(), "load_avg_at_start": os.getloadavg()}}
    out["engine"] = engine_throughput(args.decays)
    runs = [args.decays] if args.quick else [args.decays, 10 * args.decays]
    out["full_scan"] = []
    for n in runs:
        res = subprocess.run([sys.executable, __file__, "--child", str(n)], capture_output=True, text=True, check=True)
        out["full_scan"].append(json.loads(res.stdout.strip().splitlines()[-1]))
    if len(out["full_scan"]) == 2:
        a, b = out["full_scan"]
        out["memory_ratio_10x_decays"] = b["peak_rss_mb"] / a["peak_rss_mb"]
    cfg = _cfg()
    if not args.quick:
        out["counts_config_yaml"] = counts(cfg["phantom"]["activity_bq"], cfg["phantom"]["acquisition_s"] / 10, 10.0, 1)
        out["counts_config_yaml"]["note"] = "default activity for 1/10 of the acquisition, x10"
    out["counts_paper_600Bq_0.1s"] = counts(600.0, 0.1, 1.0, 50)
    out["counts_paper_600Bq_0.1s"]["note"] = "mean over 50 seeds"
    out["machine"]["load_avg_at_end"] = os.getloadavg()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
