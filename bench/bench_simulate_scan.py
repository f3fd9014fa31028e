"""One whole default scan of the fast engine (prints JSON): decays per CPU-second of the whole
scan (engine + sorting + ROOT writing, kernel loading excluded), CPU seconds by stage, the counts
and the ROOT file size, scaled from ``--decays`` to the config's activity x acquisition time.

Compares code versions on the same machine: run it once per source tree, e.g. the committed code
exported with ``git archive HEAD src config | tar -x -C /tmp/before`` and then
``PYTHONPATH=/tmp/before/src python bench/bench_simulate_scan.py --config /tmp/before/config/config.yaml``
against ``python bench/bench_simulate_scan.py`` (this tree). One core (OMP/NUMBA threads 1),
process CPU time (``time.process_time``), numba kernels loaded from the on-disk cache by a
throwaway warm-up scan first.

Usage: python bench/bench_simulate_scan.py [--decays 4e6] [--seeds 0 1] [--config config/config.yaml]
       [--set digitizer.readout=annulus ...]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("decays", "singles", "prompts", "trues", "scatters", "randoms", "delayed")


def run(config: Path, decays: float, seed: int, tmp: Path, sets: list[str] = ()) -> dict:
    import positrongan
    from positrongan import config as configlib
    from positrongan.simulate.driver import draw_phantom, run_scan

    cfg = configlib.load([config], overrides=["simulation.engine=fast", f"seed={seed}", *sets])
    full = cfg["phantom"]["activity_bq"] * cfg["phantom"]["acquisition_s"]
    cfg["phantom"]["acquisition_s"] = decays / cfg["phantom"]["activity_bq"]
    tube = draw_phantom(cfg, "scan_000")
    root = tmp / f"s{seed}.root"
    info = run_scan(cfg, "scan_000", tube, root)
    cpu = info["cpu_seconds_by_stage"]
    work = cpu["engine"] + cpu["sort"] + cpu["write"]
    scale = full / info["decays"]
    return {
        "code": str(Path(positrongan.__file__).parent),
        "seed": seed,
        "decays": info["decays"],
        "decays_per_cpu_second": info["decays"] / work,
        "cpu_seconds_by_stage": {k: round(v, 3) for k, v in cpu.items()},
        "per_default_scan": {k: round(info[k] * scale) for k in KEYS if info.get(k) is not None},
        "scatter_fraction": info["scatter_fraction"],
        "root_mb_per_default_scan": root.stat().st_size * scale / 1e6,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decays", type=float, default=4e6, help="decays simulated per run")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml")
    ap.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run(args.config, 2e5, 99, Path(tmp), args.set)  # warm-up: kernels from numba's cache
        rows = [run(args.config, args.decays, s, Path(tmp), args.set) for s in args.seeds]
    rates = [r["decays_per_cpu_second"] for r in rows]
    print(
        json.dumps(
            {
                "runs": rows,
                "decays_per_cpu_second_mean": float(np.mean(rates)),
                "decays_per_cpu_second_range": [min(rates), max(rates)],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
