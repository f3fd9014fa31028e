"""Where the compiled fast engine spends its time (prints JSON): CPU nanoseconds of each stage of
the kernel, timed alone on one core, against the whole chunk measured in the same run.

Stages: emission (decay position, positron range, the two photon directions; also with the
positron range and the acollinearity switched off), phantom transport (Woodcock tracking of one
photon through the tube), crystal tracking (one photon that left the tube, through the box
crystals: Woodcock flights through the shell of the boxes and the interactions). The whole chunk
adds the per-crystal readout, the digitizer and the output. Also the pieces a phantom flight is
made of, each alone (``pieces_ns``): the material at a point, a flight length, a cross-section
lookup. One process, numba kernels compiled first; the median of
``--repeats`` passes of ``--decays`` decays of the default scan_000.

Usage: python bench/profile_simulate.py [--decays 1e6] [--repeats 3] [--config config/config.yaml]
       [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

from positrongan.simulate import fast_numba as fnb  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# The engine's flags (no reference counting, same fastmath), but not cached: numba keys its cache
# on this file, not on the engine's source that it inlines.
@njit(**dict(fnb._JIT, cache=False))
def _track_all(pos, dirs, energy, alive, path, scat, cpe, cco, gb, gt, s, h_cry, h_dep, h_pos, h_path, h_nsc):
    hits = 0
    for k in range(energy.size):
        if alive[k]:
            hits += fnb._track_boxes(
                pos[k, 0], pos[k, 1], pos[k, 2], dirs[k, 0], dirs[k, 1], dirs[k, 2], energy[k], path[k],
                scat[k], cpe, cco, gb, gt, s, h_cry, h_dep, h_pos, h_path, h_nsc, 0,
            )  # fmt: skip
    return hits


@njit(**dict(fnb._JIT, cache=False))
def _classify_points(pts, tp, df):
    acc = 0
    for k in range(pts.shape[0]):
        acc += fnb._classify(pts[k, 0], pts[k, 1], pts[k, 2], tp, df)
    return acc


@njit(**dict(fnb._JIT, cache=False))
def _flights(n, s):
    acc = 0.0
    for _ in range(n):
        acc += fnb._expo(s)
    return acc


@njit(**dict(fnb._JIT, cache=False))
def _lookups(energies, cum):
    acc = 0.0
    for k in range(energies.size):
        i, w = fnb._grid(energies[k])
        acc += fnb._lookup3(cum, 2, k % cum.shape[1], i, w)
    return acc


def _cpu_ns(fn, per: int, repeats: int) -> float:
    """Median CPU nanoseconds per item of ``fn()`` over ``repeats`` passes."""
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return float(np.median(times)) / per * 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decays", type=float, default=1e6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml")
    ap.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    args = ap.parse_args()

    from positrongan import config as configlib
    from positrongan.simulate.driver import draw_phantom, engine_parts

    cfg = configlib.load([args.config], overrides=["simulation.engine=fast", *args.set])
    eng = fnb.NumbaEngine(*engine_parts(cfg, draw_phantom(cfg, "scan_000")))
    eng.compile()
    n = int(args.decays)
    rng = np.random.default_rng(0)
    times = np.sort(rng.uniform(0.0, 1e9, n))
    state = fnb.seed_state(rng)

    out = {"decays": n, "repeats": args.repeats}
    out["whole_chunk_ns_per_decay"] = _cpu_ns(lambda: eng.simulate_chunk(times, 0, rng), n, args.repeats)

    emitted = np.empty((12, n))
    pp = eng.pp.copy()
    emit = lambda: fnb._emit_batch(n, eng.tp, eng.df, pp, eng.dens, state, emitted)  # noqa: E731
    emit()
    out["emission_ns_per_decay"] = _cpu_ns(emit, n, args.repeats)
    pp[fnb.PP_POS_RANGE] = 0.0
    out["emission_without_positron_range_ns_per_decay"] = _cpu_ns(emit, n, args.repeats)
    pp[fnb.PP_ACOL_SIGMA] = 0.0
    out["emission_without_range_and_acollinearity_ns_per_decay"] = _cpu_ns(emit, n, args.repeats)

    _, ph = eng.emit(n, rng)  # 2n photons from the annihilation points
    start = (np.ascontiguousarray(ph.pos), np.ascontiguousarray(ph.dir), ph.energy.copy())
    alive, path, scat = np.empty(2 * n, np.bool_), np.empty(2 * n), np.empty(2 * n, np.int16)
    tables = (eng.tp, eng.df, eng.cum, eng.majorant, eng.cdfs, eng.ray_e, eng.theta, eng.pp, state)
    moved = []

    def transport():
        p, d, e = (a.copy() for a in start)
        fnb._transport_batch(p, d, e, *tables, alive, path, scat)
        moved[:] = [p, d, e]

    transport()
    out["phantom_transport_ns_per_photon"] = _cpu_ns(transport, 2 * n, args.repeats)
    out["photons_leaving_the_tube_fraction"] = float(alive.mean())

    hit_arrays = (eng.h_cry, eng.h_dep, eng.h_pos, eng.h_path, eng.h_nsc)
    # Up to 2 * MAX_CRYSTAL_INTERACTIONS deposits per call; one photon per call here.
    track = lambda: _track_all(*moved, alive, path, scat, eng.cpe, eng.cco, eng.gb, eng.gt, state, *hit_arrays)  # noqa: E731
    hits = track()
    out["crystal_tracking_ns_per_photon_leaving_the_tube"] = _cpu_ns(track, int(alive.sum()), args.repeats)
    out["crystal_deposits_per_photon_leaving_the_tube"] = hits / int(alive.sum())
    # The pieces a phantom flight is made of, each timed alone: the material at a point (uniform
    # in the tube's bounding cylinder), an exponential flight length, a cross-section lookup at a
    # random energy.
    r_b, h_b = eng.tp[fnb.TP_R_BOUND], eng.tp[fnb.TP_H_BOUND]
    rad, phi = r_b * np.sqrt(rng.uniform(0, 1, n)), rng.uniform(0, 2 * np.pi, n)
    pts = np.stack([rad * np.cos(phi), rad * np.sin(phi), rng.uniform(-h_b, h_b, n)], axis=1)
    energies = rng.uniform(0.15, 0.511, n)
    pieces = {
        "material_at_a_point": lambda: _classify_points(pts, eng.tp, eng.df),
        "exponential_flight": lambda: _flights(n, state),
        "cross_section_lookup": lambda: _lookups(energies, eng.cum),
    }
    for fn in pieces.values():
        fn()  # compile outside the timing
    out["pieces_ns"] = {name: _cpu_ns(fn, n, args.repeats) for name, fn in pieces.items()}
    per_decay = {
        "emission": out["emission_ns_per_decay"],
        "phantom": 2 * out["phantom_transport_ns_per_photon"],
        "crystals": 2 * alive.mean() * out["crystal_tracking_ns_per_photon_leaving_the_tube"],
    }
    per_decay["readout, digitizer and output (the rest)"] = out["whole_chunk_ns_per_decay"] - sum(per_decay.values())
    out["share_of_the_whole_chunk"] = {k: round(v / out["whole_chunk_ns_per_decay"], 3) for k, v in per_decay.items()}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
