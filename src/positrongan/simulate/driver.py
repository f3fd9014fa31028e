"""Simulate one scan end to end: draw the phantom, run an engine, sort coincidences, write the
ROOT file, the scan's JSON description and the truth maps (docs/contract.md, Simulation)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Mapping

import numpy as np

from ..coincidences import StreamSorter
from ..config import derived_seed
from ..geometry.grid import ReconGrid
from ..geometry.phantom import TubePhantom, truth_maps
from ..geometry.scanner import Scanner
from ..io import save_npz, write_json
from ..rootfile import SINGLES_BRANCHES, open_writer, quantise_time
from ..runtime import progress_estimated
from . import gate, materials
from .fast import FastEngine
from .settings import Acquisition, Digitizer

log = logging.getLogger(__name__)


def draw_phantom(cfg: Mapping, scan: str) -> TubePhantom:
    """The scan's phantom, drawn from its own seed stream (independent of the decays)."""
    rng = np.random.default_rng(derived_seed(cfg, "phantom", scan))
    return TubePhantom.draw(cfg["phantom"], rng)


def mu_511(tube: TubePhantom) -> np.ndarray:
    """Attenuation coefficient (1/mm, Rayleigh included, as XCOM's total) of each material id at 511 keV."""
    return np.array([float(materials.cross_sections(n).mu(0.511)) for n in tube.materials])


def make_truth(cfg: Mapping, tube: TubePhantom, scanner: Scanner | None = None) -> dict[str, np.ndarray]:
    """Truth maps on the reconstruction grid (:class:`~positrongan.geometry.grid.ReconGrid` of the
    scanner and ``reconstruction.grid``, ``fov_mm``); ``scanner`` defaults to the config's."""
    scanner = scanner if scanner is not None else Scanner.from_config(cfg["scanner"])
    grid = ReconGrid.from_config(scanner, cfg["reconstruction"])
    return truth_maps(tube, grid, mu_511=mu_511(tube))


def resolve_engine(sim_cfg: Mapping) -> str:
    """``fast`` or ``gate`` for the ``simulation.engine`` key, logging the reason for ``auto``."""
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


def engine_parts(
    cfg: Mapping, tube: TubePhantom, scanner: Scanner | None = None
) -> tuple[TubePhantom, Scanner, Digitizer, Acquisition]:
    """What every engine is built from, in its constructor's order: the phantom, and the typed
    scanner (unless given), digitizer and acquisition of a validated config."""
    scanner = scanner if scanner is not None else Scanner.from_config(cfg["scanner"])
    return tube, scanner, Digitizer.from_config(cfg["digitizer"]), Acquisition.from_config(cfg)


def make_engine(kernel: str, tube: TubePhantom, scanner: Scanner, digitizer: Digitizer, acquisition: Acquisition):
    """The fast engine with the ``simulation.kernel`` implementation: ``numba`` (compiled, the
    default), ``numpy`` (the vectorised reference) or ``cuda`` (the numba engine's decay on a GPU)."""
    if kernel == "numba":
        from .fast_numba import NumbaEngine  # imports numba: only when asked for

        return NumbaEngine(tube, scanner, digitizer, acquisition)
    if kernel == "cuda":
        from .fast_cuda import CudaEngine  # imports numba-cuda: only when asked for

        return CudaEngine(tube, scanner, digitizer, acquisition)
    if kernel == "numpy":
        return FastEngine(tube, scanner, digitizer, acquisition)
    raise ValueError(f"unknown simulation.kernel {kernel!r}; choose numba, numpy or cuda")


def volume_ids(scanner: Scanner) -> np.ndarray:
    """GATE-like ``PreStepUniqueVolumeID`` of every CrystalID (``0_0_<ring>_<index>``)."""
    ring, index = scanner.ring_and_index(np.arange(scanner.n_crystals))
    return np.array([f"0_0_{r}_{i}" for r, i in zip(ring, index)], dtype="S")


def empty_singles() -> dict[str, np.ndarray]:
    """Zero-length singles columns with the schema's types."""
    return {k: np.zeros(0, dtype="S1" if t == "string" else t) for k, t in SINGLES_BRANCHES.items()}


def run_engine(
    engine,
    scan: str,
    root_path: str | Path,
    digitizer: Digitizer,
    rng: np.random.Generator,
    write_singles: bool,
    write_volume_ids: bool,
    expected_decays: float,
    write_truth: bool = True,
) -> dict:
    """Run ``engine`` for one scan: sort its singles into coincidences, stream them into
    ``root_path`` and count. The one place that sorts, writes and counts, whatever the engine.

    Params:
        engine: a fast engine (:class:`.fast.FastEngine`, :class:`.fast_numba.NumbaEngine`) or
            :class:`.gate.GateEngine`: ``compile()``, ``chunks(rng)`` yielding (singles, time up to
            which the singles are complete or None at the end, decays in the chunk or None when
            unknown), ``expected_chunks``, ``separates_scatter`` and ``scanner``.
        scan: scan id (log and progress bar).
        root_path: the ROOT file to write.
        digitizer: the sorter's settings.
        rng: the scan's Generator.
        write_singles, write_volume_ids, write_truth: the ``simulation`` keys of the same names
            (without the truth branches in the file, the sorter still counts trues and scatters
            from the engine's in-memory ``PhantomScatters``).
        expected_decays: activity x time, reported when the engine does not count its decays.
    Returns:
        Counts and timings for the scan's JSON.
    """
    delayed = digitizer.delayed_window
    sorter = StreamSorter(
        digitizer.coincidence_window_ns,
        digitizer.multiples_policy,
        digitizer.delayed_offset_ns if delayed else None,
        keep_singles=write_singles,
        n_crystals=engine.scanner.n_crystals,
    )
    decays: int | None = 0
    expected = int(round(expected_decays))
    t0 = time.perf_counter()
    # CPU seconds per stage (process time): compiling or loading the kernels, the engine, the
    # coincidence sorter, the ROOT writer.
    cpu = {"jit": 0.0, "engine": 0.0, "sort": 0.0, "write": 0.0}
    c0 = time.process_time()
    engine.compile()
    sorter.compile()
    c1 = time.process_time()
    cpu["jit"] = c1 - c0
    with open_writer(
        root_path,
        delayed,
        write_singles=write_singles,
        volume_ids=volume_ids(engine.scanner),  # for singles that carry only CrystalID
        volume_id_branches=write_volume_ids,
        truth=write_truth,
    ) as writer:
        chunks = progress_estimated(engine.chunks(rng), engine.expected_chunks, desc=f"simulate {scan}", unit="chunk")
        for singles, known_until, n in chunks:
            decays = None if n is None or decays is None else decays + n
            singles = dict(singles)
            singles["GlobalTime"] = quantise_time(singles["GlobalTime"])
            c2 = time.process_time()
            batch = sorter.push(singles, known_until=known_until)
            c3 = time.process_time()
            writer.add(*batch)
            c4 = time.process_time()
            cpu["engine"] += c2 - c1
            cpu["sort"] += c3 - c2
            cpu["write"] += c4 - c3
            c1 = c4
        batch = sorter.push(empty_singles(), known_until=None)
        c2 = time.process_time()
        writer.add(*batch)
        writer.write_singles_rates(sorter.crystal_singles)
    cpu["sort"] += c2 - c1
    cpu["write"] += time.process_time() - c2  # includes closing the file
    seconds = time.perf_counter() - t0
    s = sorter.stats
    separated = engine.separates_scatter
    counts = {
        "decays": decays if decays is not None else expected,
        "singles": s.singles,
        "prompts": s.prompts,
        "trues": s.trues if separated else None,
        "scatters": s.scatters if separated else None,
        "randoms": s.randoms,
        "delayed": s.delayed if delayed else None,
        "scatter_fraction": s.scatters / s.prompts if separated and s.prompts else None,
        "randoms_fraction": s.randoms / s.prompts if s.prompts else None,
        "seconds": seconds,
        "decays_per_second": (decays if decays is not None else expected) / max(seconds, 1e-9),
        "cpu_seconds_by_stage": cpu,
    }
    background = getattr(engine, "background", None)
    if background is not None:
        # The crystals' 176Lu (simulation.lyso_background): its share of every count.
        counts.update(
            {
                "lyso_activity_bq": background.activity_bq,
                "lyso_decays": background.decays,
                "lyso_singles": s.background_singles,
                "lyso_prompts": s.background_prompts,
                "lyso_trues": s.background_trues,
                "lyso_delayed": s.background_delayed if delayed else None,
            }
        )
        log.info(
            "%s: 176Lu background %.4g Bq: %s decays, %d singles, %d prompts (%d from one decay), %s delayed",
            scan,
            background.activity_bq,
            background.decays,
            s.background_singles,
            s.background_prompts,
            s.background_trues,
            counts["lyso_delayed"],
        )
    if decays is None:
        counts["decays_note"] = "expected value (activity x time); GATE draws the actual number"
    if not separated:
        counts["trues_and_scatters"] = s.trues + s.scatters
    log.info(
        "%s: %d decays, %d singles, %d prompts (%s trues, %s scatters, %d randoms), %d delayed in %.1f s (%.3g decays/s;"
        " %.1f CPU-s of it compiling or loading the kernels)",
        scan,
        counts["decays"],
        s.singles,
        s.prompts,
        counts["trues"],
        counts["scatters"],
        s.randoms,
        s.delayed,
        seconds,
        counts["decays_per_second"],
        cpu["jit"],
    )
    return counts


def run_scan(
    cfg: Mapping,
    scan: str,
    tube: TubePhantom,
    root_path: str | Path,
    engine_name: str = "fast",
    scanner: Scanner | None = None,
) -> dict:
    """Simulate ``tube`` with the named engine (``fast`` or ``gate``) into ``root_path``.

    Builds the typed digitizer and acquisition (and the scanner, unless given) once from ``cfg``
    and hands them to the engine; :func:`run_engine` then sorts, writes and counts.

    Returns:
        Counts and timings for the scan's JSON.
    """
    parts = engine_parts(cfg, tube, scanner)
    digitizer, acquisition = parts[2:]
    sim = cfg["simulation"]
    if engine_name == "gate":
        seed = derived_seed(cfg, "gate", scan)
        engine = gate.GateEngine(*parts, seed, Path(root_path).parent)
    else:
        engine = make_engine(sim["kernel"], *parts)
    return run_engine(
        engine,
        scan,
        root_path,
        digitizer,
        np.random.default_rng(derived_seed(cfg, "simulate", scan)),
        write_singles=sim["write_singles"],
        write_volume_ids=sim["write_volume_ids"],
        expected_decays=acquisition.expected_decays,
        write_truth=sim["write_truth"],
    )


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
    engine_name = resolve_engine(cfg["simulation"])
    scanner = Scanner.from_config(cfg["scanner"])
    counts = run_scan(cfg, scan, tube, root_path, engine_name, scanner)
    if truth_path is not None:
        t0 = time.perf_counter()
        save_npz(truth_path, **make_truth(cfg, tube, scanner))
        log.info("%s: truth maps written in %.1f s", scan, time.perf_counter() - t0)
    meta = {
        "scan": scan,
        "seed": derived_seed(cfg, "simulate", scan),
        "phantom_seed": derived_seed(cfg, "phantom", scan),
        "engine": engine_name,
        "phantom": tube.describe(),
        "defects": [d.to_json() for d in tube.defects],
        **counts,
        "config": {k: cfg[k] for k in ("seed", "scans", "phantom", "scanner", "digitizer", "simulation")},
        "truth_grid": {k: cfg["reconstruction"][k] for k in ("grid", "fov_mm")},
    }
    write_json(meta_path, meta)
    return meta
