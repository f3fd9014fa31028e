"""Benchmark of the fast simulation engine, compiled (numba) against the numpy reference (prints JSON).

Measures, on one core (OMP_NUM_THREADS=1, NUMBA_NUM_THREADS=1; CPU time, ``time.process_time``),
for the default phantom and scanner of config/config.yaml, both kernels in the same run:
- engine throughput (decays per CPU-second; median of 3 passes, with the range) of
  ``simulation.kernel: numba`` and ``numpy``, and their ratio;
- whole scans (engine + coincidence sorting + ROOT writing, each in a fresh process) at N and
  10 N decays with the config's output settings (``write_singles``/``write_volume_ids`` as in
  config/config.yaml), with the CPU seconds of each stage (kernel loading, engine, sorter,
  writer), peak resident memory (must stay flat in the decays) and the ROOT file size; and the
  reference: the numpy kernel writing everything (Singles and the volume-id strings), i.e.
  the previous behaviour, at N decays (and at 10 N with ``--full-reference``);
- the numba kernels' first compilation (empty cache directory, fresh process) and their load
  time from the on-disk cache;
- counts per scan of both kernels (default activity, from the N-decay runs scaled to the
  config's acquisition) and, for the numba kernel, the paper's 600 Bq x 0.1 s (mean over seeds).

Usage: python bench/bench_simulate.py [--decays 4000000] [--quick] [--full-reference]
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
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COUNT_KEYS = ("decays", "singles", "prompts", "trues", "scatters", "randoms", "delayed")


def _cfg(sim: dict | None = None, **phantom):
    from positrongan import config

    cfg = config.load([ROOT / "config" / "config.yaml"], overrides=["simulation.engine=fast"])
    cfg["phantom"].update(phantom)
    cfg["simulation"].update(sim or {})
    return cfg


def engine_throughput(kernel: str, n_decays: int) -> dict:
    from positrongan.simulate.driver import draw_phantom, engine_parts, make_engine

    cfg = _cfg({"kernel": kernel})
    eng = make_engine(kernel, *engine_parts(cfg, draw_phantom(cfg, "scan_000")))
    rng = np.random.default_rng(0)
    chunk = cfg["simulation"]["chunk_decays"]
    times = np.sort(rng.uniform(0, 1e9, n_decays))
    c0 = time.process_time()
    if hasattr(eng, "compile"):
        eng.compile()
    eng.simulate_chunk(times[:1000], 0, rng)  # warm up (tables, caches)
    warm = time.process_time() - c0
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
    return {
        "kernel": kernel,
        "decays": n_decays,
        "chunk_decays": chunk,
        "warm_up_cpu_s": warm,
        "singles_per_decay": singles / n_decays,
        "engine_cpu_s": cpu,
        "engine_wall_s": wall,
        "engine_decays_per_cpu_s": n_decays / cpu,
        "engine_decays_per_cpu_s_range": [n_decays / max(cpus), n_decays / min(cpus)],
    }


def child_scan(n_decays: int, sim: dict) -> dict:
    """One full scan (engine, sorter, ROOT writing) of about n_decays at the default activity."""
    from positrongan.simulate.driver import draw_phantom, run_scan

    activity = _cfg()["phantom"]["activity_bq"]
    cfg = _cfg(sim, acquisition_s=n_decays / activity)
    tube = draw_phantom(cfg, "scan_000")
    with tempfile.TemporaryDirectory() as tmp:
        c0, w0 = time.process_time(), time.perf_counter()
        info = run_scan(cfg, "scan_000", tube, Path(tmp) / "s.root")
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        size = (Path(tmp) / "s.root").stat().st_size
    stages = info.pop("cpu_seconds_by_stage")
    info.update(
        simulation={k: cfg["simulation"][k] for k in ("kernel", "write_singles", "write_volume_ids", "chunk_decays")},
        cpu_s=cpu,
        wall_s=wall,
        cpu_s_by_stage=stages,
        decays_per_cpu_s=info["decays"] / cpu,
        decays_per_cpu_s_without_kernel_loading=info["decays"] / (cpu - stages["jit"]),
        root_mb=size / 1e6,
        root_bytes_per_prompt=size / max(info["prompts"], 1),
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        acquisition_s=cfg["phantom"]["acquisition_s"],
    )
    return info


def child_compile() -> dict:
    """Compile the numba kernels into an empty cache (run with NUMBA_CACHE_DIR set), then load them."""
    from positrongan.simulate.driver import draw_phantom, engine_parts, make_engine

    cfg = _cfg({"kernel": "numba"})
    eng = make_engine("numba", *engine_parts(cfg, draw_phantom(cfg, "scan_000")))
    c0 = time.process_time()
    eng.compile()
    return {"compile_cpu_s": time.process_time() - c0}


def _child(args: list[str], env: dict | None = None) -> dict:
    res = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=True, env={**os.environ, **(env or {})}
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


def counts(activity: float, seconds: float, scale: float, seeds: int, sim: dict) -> dict:
    from positrongan.simulate.driver import draw_phantom, run_scan

    totals: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for s in range(seeds):
            cfg = _cfg(sim, activity_bq=activity, acquisition_s=seconds)
            cfg["seed"] = s
            info = run_scan(cfg, "scan_000", draw_phantom(cfg, "scan_000"), Path(tmp) / f"{s}.root")
            for k in COUNT_KEYS:
                totals[k] = totals.get(k, 0) + (info[k] or 0) * scale / seeds
    return {k: round(v, 1) for k, v in totals.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--decays", type=float, default=4e6, help="decays of the smaller full-scan run (the other is 10x)")
    ap.add_argument("--engine-decays", type=int, default=400_000, help="decays per engine-throughput pass")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--child-sim", default="{}", help=argparse.SUPPRESS)
    ap.add_argument("--child-compile", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="skip the 10x runs and the paper counts")
    ap.add_argument("--full-reference", action="store_true", help="also run the numpy reference at 10x decays")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child_scan(args.child, json.loads(args.child_sim))))
        return
    if args.child_compile:
        print(json.dumps(child_compile()))
        return
    import logging

    logging.disable(logging.INFO)
    n = int(args.decays)
    out = {
        "machine": {"cpu_count": os.cpu_count(), "load_avg_at_start": os.getloadavg()},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    with tempfile.TemporaryDirectory() as cache:
        out["numba_first_compile"] = _child(["--child-compile"], env={"NUMBA_CACHE_DIR": cache})
    out["numba_cached_load"] = _child(["--child-compile"])  # the default cache, warmed by now
    out["engine"] = {k: engine_throughput(k, args.engine_decays) for k in ("numba", "numpy")}
    out["engine"]["ratio_numba_over_numpy"] = (
        out["engine"]["numba"]["engine_decays_per_cpu_s"] / out["engine"]["numpy"]["engine_decays_per_cpu_s"]
    )
    reference = {"kernel": "numpy", "write_singles": True, "write_volume_ids": True}
    runs = [(n, {}), (n, reference)]
    if not args.quick:
        runs.append((10 * n, {}))
        if args.full_reference:
            runs.append((10 * n, reference))
    out["full_scan"] = [_child(["--child", str(d), "--child-sim", json.dumps(sim)]) for d, sim in runs]
    scans = out["full_scan"]
    out["whole_scan_ratio_numba_defaults_over_reference"] = scans[0]["decays_per_cpu_s"] / scans[1]["decays_per_cpu_s"]
    if not args.quick:
        out["memory_ratio_10x_decays"] = scans[2]["peak_rss_mb"] / scans[0]["peak_rss_mb"]
    # Counts per scan of the default config (4 MBq x acquisition), from the N-decay runs.
    cfg = _cfg()
    per_scan = cfg["phantom"]["activity_bq"] * cfg["phantom"]["acquisition_s"]
    out["counts_config_yaml"] = {
        s["simulation"]["kernel"]: {k: round((s[k] or 0) * per_scan / s["decays"], 1) for k in COUNT_KEYS}
        for s in scans[:2]
    }
    out["counts_config_yaml"]["note"] = f"N-decay runs scaled to {per_scan:.3g} decays (counts are linear in time)"
    if not args.quick:
        out["counts_paper_600Bq_0.1s"] = counts(600.0, 0.1, 1.0, 50, {"kernel": "numba"})
        out["counts_paper_600Bq_0.1s"]["note"] = "numba kernel, mean over 50 seeds"
    out["machine"]["load_avg_at_end"] = os.getloadavg()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
