"""Simulate one scan end to end: draw the phantom, run an engine, sort coincidences, write the
ROOT file, the scan's JSON description and the truth maps (docs/contract.md, Simulation)."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Mapping

import numpy as np

from ..config import derived_seed
from ..geometry.phantom import TubePhantom, truth_maps
from ..geometry.scanner import Scanner
from ..io import save_npz, write_json
from ..runtime import progress
from . import materials
from .rootio import SINGLES_BRANCHES, open_writer

log = logging.getLogger(__name__)


def draw_phantom(cfg: Mapping, scan: str) -> TubePhantom:
    """The scan's phantom, drawn from its own seed stream (independent of the decays)."""
    rng = np.random.default_rng(derived_seed(cfg, "phantom", scan))
    return TubePhantom.draw(cfg["phantom"], rng)


def mu_511(tube: TubePhantom) -> np.ndarray:
    """Attenuation coefficient (1/mm, Rayleigh included, as XCOM's total) of each material id at 511 keV."""
    return np.array([float(materials.cross_sections(n).mu(0.511)) for n in tube.materials])


def make_truth(cfg: Mapping, tube: TubePhantom) -> dict[str, np.ndarray]:
    """Truth maps on the reconstruction grid (``reconstruction.grid``, ``fov_mm``; scanner planes)."""
    scanner = Scanner.from_config(cfg["scanner"])
    rec = cfg["reconstruction"]
    planes = np.arange(scanner.n_planes)
    return truth_maps(
        tube,
        grid=rec["grid"],
        fov_mm=rec["fov_mm"],
        plane_z=scanner.plane_z(planes),
        plane_mm=scanner.axial_pitch_mm / 2,
        mu_511=mu_511(tube),
    )


def resolve_engine(sim_cfg: Mapping) -> str:
    """``fast`` or ``gate`` for the ``simulation.engine`` key, logging the reason for ``auto``."""
    from . import gate

    choice = sim_cfg["engine"]
    if choice != "auto":
        return choice
    ok, reason = gate.availability()
    if ok:
        log.info(
            "engine auto -> gate (opengate and its Geant4 data are present); Geant4 is far slower than the "
            "fast engine: set simulation.engine: fast for quick runs"
        )
        return "gate"
    log.info("engine auto -> fast (%s)", reason)
    return "fast"


def make_engine(kernel: str, tube: TubePhantom, scanner: Scanner, phantom_cfg, digitizer_cfg, simulation_cfg):
    """The fast engine with the ``simulation.kernel`` implementation: ``numba`` (compiled, the
    default) or ``numpy`` (the vectorised reference)."""
    if kernel == "numba":
        from .fast_numba import NumbaEngine

        return NumbaEngine(tube, scanner, phantom_cfg, digitizer_cfg, simulation_cfg)
    if kernel == "numpy":
        from .fast import FastEngine

        return FastEngine(tube, scanner, phantom_cfg, digitizer_cfg, simulation_cfg)
    raise ValueError(f"unknown simulation.kernel {kernel!r}; choose numba or numpy")


def volume_ids(scanner: Scanner) -> np.ndarray:
    """GATE-like ``PreStepUniqueVolumeID`` of every CrystalID (``0_0_<ring>_<index>``)."""
    ring, index = scanner.ring_and_index(np.arange(scanner.n_crystals))
    return np.array([f"0_0_{r}_{i}" for r, i in zip(ring, index)], dtype="S")


def empty_singles() -> dict[str, np.ndarray]:
    """Zero-length singles columns with the schema's types."""
    return {k: np.zeros(0, dtype="S1" if t == "string" else t) for k, t in SINGLES_BRANCHES.items()}


def run_fast(cfg: Mapping, scan: str, tube: TubePhantom, root_path: str | Path) -> dict:
    """Run the fast engine for one scan and stream its output into ``root_path``.

    Returns:
        Counts and timings for the scan's JSON.
    """
    from ..coincidences import StreamSorter
    from .fast import FWHM_TO_SIGMA

    dig = cfg["digitizer"]
    sim = cfg["simulation"]
    scanner = Scanner.from_config(cfg["scanner"])
    engine = make_engine(sim["kernel"], tube, scanner, cfg["phantom"], dig, sim)
    rng = np.random.default_rng(derived_seed(cfg, "simulate", scan))
    delayed = dig["delayed_window"]
    write_singles = sim["write_singles"]
    sorter = StreamSorter(
        dig["coincidence_window_ns"],
        dig["multiples_policy"],
        dig["delayed_offset_ns"] if delayed else None,
        keep_singles=write_singles,
    )
    # Singles of later decays can precede their decay time only by the time blur: 10 sigma is safe.
    guard_ns = 1.0 + 10.0 * dig["time_resolution_ps"] * 1e-3 * FWHM_TO_SIGMA
    expected = cfg["phantom"]["activity_bq"] * cfg["phantom"]["acquisition_s"]
    n_chunks = max(1, math.ceil(expected / cfg["simulation"]["chunk_decays"]))
    decays = 0
    t0 = time.perf_counter()
    # CPU seconds per stage (process time): compiling or loading the kernels, the engine, the
    # coincidence sorter, the ROOT writer.
    cpu = {"jit": 0.0, "engine": 0.0, "sort": 0.0, "write": 0.0}
    c0 = time.process_time()
    if hasattr(engine, "compile"):
        engine.compile()
    sorter.compile()
    c1 = time.process_time()
    cpu["jit"] = c1 - c0
    with open_writer(
        root_path,
        delayed,
        write_singles=write_singles,
        volume_ids=volume_ids(scanner),
        volume_id_branches=sim["write_volume_ids"],
    ) as writer:
        bar = progress(total=n_chunks, desc=f"simulate {scan}", unit="chunk")
        for times in engine.decay_chunks(rng):
            singles = engine.simulate_chunk(times, decays, rng)
            decays += times.size
            c2 = time.process_time()
            batch = sorter.push(singles, known_until=float(times[-1]) - guard_ns)
            c3 = time.process_time()
            writer.add(*batch)
            c4 = time.process_time()
            cpu["engine"] += c2 - c1
            cpu["sort"] += c3 - c2
            cpu["write"] += c4 - c3
            c1 = c4
            bar.update(1)
        batch = sorter.push(empty_singles(), known_until=None)
        c2 = time.process_time()
        writer.add(*batch)
        bar.close()
    cpu["sort"] += c2 - c1
    cpu["write"] += time.process_time() - c2  # includes closing the file
    seconds = time.perf_counter() - t0
    s = sorter.stats
    log.info(
        "%s: %d decays, %d singles, %d prompts (%d trues, %d scatters, %d randoms), %d delayed in %.1f s (%.3g decays/s)",
        scan,
        decays,
        s.singles,
        s.prompts,
        s.trues,
        s.scatters,
        s.randoms,
        s.delayed,
        seconds,
        decays / max(seconds, 1e-9),
    )
    return {
        "decays": decays,
        "singles": s.singles,
        "prompts": s.prompts,
        "trues": s.trues,
        "scatters": s.scatters,
        "randoms": s.randoms,
        "delayed": s.delayed if delayed else None,
        "scatter_fraction": s.scatters / s.prompts if s.prompts else None,
        "randoms_fraction": s.randoms / s.prompts if s.prompts else None,
        "seconds": seconds,
        "decays_per_second": decays / max(seconds, 1e-9),
        "cpu_seconds_by_stage": cpu,
    }


def simulate_scan(
    cfg: Mapping, scan: str, root_path: str | Path, meta_path: str | Path, truth_path: str | Path | None
) -> dict:
    """Simulate ``scan`` and write its three artifacts.

    Params:
        cfg: the config (sections scans, phantom, scanner, digitizer, simulation, reconstruction).
        scan: scan id (``scan_000``).
        root_path, meta_path, truth_path: outputs (truth_path None: skip the truth maps).
    Returns:
        The JSON description that was written.
    """
    tube = draw_phantom(cfg, scan)
    log.info("%s: tube %s, defects: %s", scan, tube.describe(), [d.type for d in tube.defects] or "none")
    engine = resolve_engine(cfg["simulation"])
    if engine == "gate":
        from . import gate

        counts = gate.run_gate(cfg, scan, tube, root_path)
    else:
        counts = run_fast(cfg, scan, tube, root_path)
    if truth_path is not None:
        t0 = time.perf_counter()
        save_npz(truth_path, **make_truth(cfg, tube))
        log.info("%s: truth maps written in %.1f s", scan, time.perf_counter() - t0)
    meta = {
        "scan": scan,
        "seed": derived_seed(cfg, "simulate", scan),
        "phantom_seed": derived_seed(cfg, "phantom", scan),
        "engine": engine,
        "phantom": tube.describe(),
        "defects": [d.to_json() for d in tube.defects],
        **counts,
        "config": {k: cfg[k] for k in ("seed", "scans", "phantom", "scanner", "digitizer", "simulation")},
        "truth_grid": {k: cfg["reconstruction"][k] for k in ("grid", "fov_mm")},
    }
    write_json(meta_path, meta)
    return meta
