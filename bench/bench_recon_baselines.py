"""Cost of the reconstruction-side enhancement baselines on one short-scan twin (prints JSON):

1. ``positrongan reconstruct --fraction f`` as the default pipeline runs it (plain),
2. the same with ``--snapshots`` (osem_early: iterations up to enhancement.osem_max_iterations,
   each post-filtered at every enhancement.osem_fwhm_mm, kept at the dataset's scale),
3. ``positrongan reconstruct-map`` (map_rdp: one MAP-OSEM reconstruction per enhancement.map_betas),

each in a fresh process, with wall time, CPU time (this process's children) and the size of the
file written. Inputs are a finished run's ROOT, truth and normalisation files.

Run: OMP_NUM_THREADS=1 python bench/bench_recon_baselines.py --results results --scan scan_001 \
     --fraction 0.1 [--config results/config.yaml] [--skip-map]
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


def run(argv: list[str]) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "positrongan", *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        # the child's last lines hold its one-line error (a config key, a missing file)
        tail = "\n".join(proc.stderr.splitlines()[-5:])
        sys.exit(f"positrongan {argv[0]} failed (exit {proc.returncode}):\n{tail}")
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results", help="a finished run's results folder")
    ap.add_argument("--config", help="its config (default: <results>/config.yaml)")
    ap.add_argument("--scan", default="scan_001")
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--skip-map", action="store_true", help="leave out reconstruct-map (the slowest)")
    args = ap.parse_args()
    res = Path(args.results)
    cfg = args.config or str(res / "config.yaml")
    common = [
        "--config",
        cfg,
        "--set",
        "device=cpu",
        "--threads",
        "1",
        "--scan",
        args.scan,
        "--root",
        str(res / "sim" / f"{args.scan}.root"),
        "--truth",
        str(res / "truth" / f"{args.scan}.npz"),
        "--fraction",
        str(args.fraction),
    ]
    # the run's normalisation factors (reconstruction.normalisation, on in the default)
    norm = res / "recon" / "normalisation.npz"
    if norm.exists():
        common += ["--normalisation", str(norm)]
    out = {"scan": args.scan, "fraction": args.fraction, "threads": 1, "cpu": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out["plain"] = run(["reconstruct", *common, "--out", str(tmp / "plain.npz")])
        out["plain"]["mb"] = round((tmp / "plain.npz").stat().st_size / 1e6, 1)
        out["snapshots"] = run(
            ["reconstruct", *common, "--out", str(tmp / "s.npz"), "--snapshots", str(tmp / "it.npz")]
        )
        out["snapshots"]["mb"] = round((tmp / "it.npz").stat().st_size / 1e6, 1)
        out["osem_early_added"] = {k: round(out["snapshots"][k] - out["plain"][k], 2) for k in ("wall_s", "cpu_s")}
        if not args.skip_map:
            out["map"] = run(["reconstruct-map", *common, "--out", str(tmp / "map.npz")])
            out["map"]["mb"] = round((tmp / "map.npz").stat().st_size / 1e6, 1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
