"""Run the GPU engine under numba-cuda's simulator: one chunk (its singles, an .npz) or one
whole scan through the driver (``simulation.kernel: cuda``; its counts, a JSON beside the ROOT file).

Usage: NUMBA_ENABLE_CUDASIM=1 python tests/cudasim.py chunk OUT.npz
       NUMBA_ENABLE_CUDASIM=1 python tests/cudasim.py scan DIR

Run by ``tests/test_simulate_cuda.py`` in a process of its own (the simulator must be switched on
before numba.cuda is imported). The simulator runs the kernels' Python bodies, one thread per
decay, on the CPU; the decay itself stays the CPU's compiled ``_simulate_chunk`` (the same
``_decays`` source). The simulator hands kernels its own array objects, which a compiled
function cannot take, so ``_decays`` is swapped for a call that passes the arrays under them:
everything else (the per-decay streams, the slot slices, the rerun on overflow, the cumulative
offsets, the pack kernel and, for a scan, the driver) runs as the package wrote it.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np

from positrongan import config as configlib
from positrongan.simulate import fast_cuda
from positrongan.simulate import fast_numba as fnb
from positrongan.simulate.driver import draw_phantom, engine_parts

# The chunk the test rebuilds decay by decay: a window from 50 keV, so that decays can leave more
# singles than the kernel's slots and the chunk reruns with more.
WINDOW_KEV = [50, 750]
DECAYS = 1500
FIRST_EVENT = 1000
TIMES_SEED = 0
CHUNK_SEED = 1
# The whole scan, which the test sets against a CPU-engine scan of as many decays.
SCAN_DECAYS = 20_000
SCAN_SEED = 3


def chunk_times() -> np.ndarray:
    return np.sort(np.random.default_rng(TIMES_SEED).uniform(0, 1e8, DECAYS))


def engine_args() -> tuple:
    cfg = configlib.validate({"digitizer": {"energy_window_kev": WINDOW_KEV}})
    return engine_parts(cfg, draw_phantom(cfg, "scan_000"))


def _host_decays(*args):
    return fnb._simulate_chunk(*(getattr(a, "_ary", a) for a in args))


def main(mode: str, out: str) -> None:
    if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        sys.exit("cudasim.py: set NUMBA_ENABLE_CUDASIM=1 (numba-cuda's simulator)")
    fnb._decays = _host_decays  # the kernel looks it up at each call: see the module docstring
    if mode == "chunk":
        engine = fast_cuda.CudaEngine(*engine_args())
        cols = engine.simulate_chunk(chunk_times(), FIRST_EVENT, np.random.default_rng(CHUNK_SEED))
        np.savez(out, slots=fast_cuda.SLOTS, **cols)
    elif mode == "scan":
        from helpers import fast_scan

        info, _ = fast_scan(Path(out), "cuda", SCAN_SEED, decays=SCAN_DECAYS)
        (Path(out) / "info.json").write_text(json.dumps(info))
    else:
        sys.exit(f"cudasim.py: mode {mode!r} is neither chunk nor scan")


if __name__ == "__main__":
    main(*sys.argv[1:3])
