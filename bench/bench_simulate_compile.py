"""What the compiled fast engine costs on first use (prints JSON): CPU seconds and peak memory of
compiling its chunk kernel into an empty numba cache (with numba's three slowest passes), and of
loading it from that cache after.

Each measurement is a fresh child process (``NUMBA_CACHE_DIR`` a new temporary folder, one core),
so its peak resident memory (``ru_maxrss``) is the compile's, Python and numpy included. A
``simulate_scan`` job pays the compile when it starts before any job has written the cache (the
first jobs of a fresh install, one per core); the rest load it.

Compares code versions on the same machine, like ``bench_simulate_scan.py``: export the other
version with ``git archive REV src config workflow/schemas | tar -x -C /tmp/before`` (the schema
is a link into workflow/) and run
``PYTHONPATH=/tmp/before/src python bench/bench_simulate_compile.py`` beside
``python bench/bench_simulate_compile.py``.

Usage: python bench/bench_simulate_compile.py [--config config/config.yaml] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(config: str) -> dict:
    import resource
    import time

    from positrongan import config as configlib
    from positrongan.simulate import fast_numba
    from positrongan.simulate.driver import draw_phantom, engine_parts

    cfg = configlib.load([config], overrides=["simulation.engine=fast"])
    engine = fast_numba.NumbaEngine(*engine_parts(cfg, draw_phantom(cfg, "scan_000")))
    t0 = time.process_time()
    engine.compile()
    out = {
        "cpu_seconds": time.process_time() - t0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
    # Where a compile's time went: numba's slowest passes (no metadata when loaded from the cache).
    kernel = fast_numba._simulate_chunk
    meta = kernel.get_metadata(kernel.signatures[0]) if kernel.signatures else None
    if meta is not None:
        passes = meta["pipeline_times"]["nopython"]
        out["slowest_numba_passes_s"] = dict(sorted(((k, v.run) for k, v in passes.items()), key=lambda kv: -kv[1])[:3])
    return out


def measure(config: str, cache: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, __file__, "--child", "--config", config], env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        sys.exit(f"the compiling child failed (exit {out.returncode}):\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "config" / "config.yaml"))
    ap.add_argument("--repeats", type=int, default=1, help="cold compiles (each into its own empty cache)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.config)))
        return
    import positrongan

    runs = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="numba_cache_") as cache:
            runs.append({"cold": measure(args.config, cache), "cached": measure(args.config, cache)})
    print(json.dumps({"code": str(Path(positrongan.__file__).parent), "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
