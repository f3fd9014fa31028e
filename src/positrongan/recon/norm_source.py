"""The normalisation source: a uniform activity cylinder in air simulated with the configured
scanner, digitizer and fast-engine kernel, and the factors estimated from its true coincidences
(``recon/normalisation.py`` holds the method, the estimator and how the factors are applied).

Kept apart from ``normalisation.py`` so that the reconstruction, which only applies the factors,
does not import the simulation engines."""

from __future__ import annotations

import logging
import time
from dataclasses import fields, replace
from typing import Mapping

import numpy as np

from ..config import NORM_SOURCE_MARGIN_MM
from ..errors import ConfigError
from ..geometry.phantom import TubePhantom
from ..geometry.scanner import Scanner
from ..runtime import progress_estimated
from .lors import SinogramGeometry
from .normalisation import FORMAT, estimate_components, model_counts, norm_geometry, ring_pair_counts

log = logging.getLogger(__name__)

# Source radius beyond the largest chord distance of the sinogram (the config rule that checks it
# fits the bore owns the number).
MARGIN_MM = NORM_SOURCE_MARGIN_MM
# Source length beyond each end of the rings (oblique LORs of the end rings stay inside it).
AXIAL_MARGIN_MM = 16.0


class ActivityCylinder(TubePhantom):
    """A uniform activity cylinder in air: the tube's geometry (its lumen is the source) with every
    material air, so the engines simulate the source without attenuation or phantom scatter."""

    @property
    def materials(self) -> list[str]:
        return ["Air"] * 5


def source_cylinder(scanner: Scanner, geom: SinogramGeometry) -> ActivityCylinder:
    """The normalisation source for a sinogram geometry (module docstring).

    Raises:
        ConfigError: when the source would not fit inside the bore.
    """
    rho_max = float(np.abs(geom.radial_mm()).max())
    radius = rho_max + MARGIN_MM
    if radius + 1.0 >= scanner.inner_radius_mm:
        raise ConfigError(
            f"config key 'reconstruction.fov_mm': the normalisation source ({radius:.1f} mm radius, the field of "
            f"view's chords plus {MARGIN_MM} mm) does not fit inside the ring (inner radius "
            f"{scanner.inner_radius_mm:.1f} mm); set reconstruction.normalisation: false or a smaller fov_mm"
        )
    wall = 0.5  # air like the rest: only the lumen (radius - wall) holds activity
    return ActivityCylinder(
        length_mm=scanner.axial_length_mm + 2 * AXIAL_MARGIN_MM,
        a_mm=radius + wall,
        b_mm=radius + wall,
        wall_mm=wall,
        wall_variation=0.0,
        wall_phase=0.0,
        psi=0.0,
        bend_mm=0.0,
        bend_direction=0.0,
        deposit_material="Air",
    )


def simulate_trues(
    cfg: Mapping, scanner: Scanner, source: ActivityCylinder, decays: float, seed: int
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Simulate ``decays`` decays of the source with the configured fast-engine kernel, digitizer
    and sorter; keep the true coincidences (both singles from one decay).

    The positron range is off: it is a property of the source, and in air it would carry the
    annihilations metres away. The activity is ``phantom.activity_bq`` (the sorter's multiples
    losses as in a scan); no 176Lu crystal background is simulated.

    Returns:
        (CrystalID1, CrystalID2, counts and timings).
    """
    from ..coincidences import StreamSorter
    from ..simulate.driver import empty_singles, engine_parts, make_engine

    _, _, digitizer, acq = engine_parts(cfg, source, scanner)
    activity = float(cfg["phantom"]["activity_bq"])
    acq = replace(acq, positron_range=False, activity_bq=activity, acquisition_s=decays / activity)
    if "lyso_activity_bq" in {f.name for f in fields(acq)}:
        # No crystal background: a 176Lu decay's beta and gamma can make a "true" pair of their own.
        acq = replace(acq, lyso_activity_bq=0.0)
    if cfg["simulation"]["engine"] == "gate":
        log.info(
            "simulation.engine is gate: the normalisation source is simulated with the fast engine, which reads "
            "out the same detector (scanner and digitizer sections); Geant4 would take hours for these counts"
        )
    engine = make_engine(cfg["simulation"]["kernel"], source, scanner, digitizer, acq)
    sorter = StreamSorter(
        digitizer.coincidence_window_ns,
        digitizer.multiples_policy,
        None,
        keep_singles=False,
        n_crystals=scanner.n_crystals,
    )
    t0 = time.perf_counter()
    engine.compile()
    sorter.compile()
    c1, c2 = [], []
    n_decays = 0

    def keep(pairs):
        same = pairs["EventID1"] == pairs["EventID2"]
        c1.append(pairs["CrystalID1"][same].astype(np.int64))
        c2.append(pairs["CrystalID2"][same].astype(np.int64))

    chunks = engine.chunks(np.random.default_rng(seed))
    for singles, known_until, n in progress_estimated(
        chunks, engine.expected_chunks, desc="normalisation source", unit="chunk"
    ):
        n_decays += n
        keep(sorter.push(singles, known_until)[1])
    keep(sorter.push(empty_singles(), None)[1])
    c1, c2 = np.concatenate(c1), np.concatenate(c2)
    info = {
        "decays": n_decays,
        "prompts": int(sorter.stats.prompts),
        "trues": int(c1.size),
        "simulation_seconds": time.perf_counter() - t0,
    }
    log.info(
        "normalisation source: %d decays, %d prompts, %d trues in %.1f s",
        n_decays,
        info["prompts"],
        info["trues"],
        info["simulation_seconds"],
    )
    return c1, c2, info


def build_normalisation(cfg: Mapping, seed: int) -> dict:
    """Simulate the source and estimate the factors: the arrays of ``recon/normalisation.npz``.

    Params:
        cfg: the config (sections scanner, digitizer, simulation; phantom.activity_bq;
            reconstruction.mode, fov_mm, doi_mm, normalisation_decays).
        seed: the simulation's seed.
    """
    scanner = Scanner.from_config(cfg["scanner"])
    rcfg = cfg["reconstruction"]
    geom = norm_geometry(scanner, rcfg)
    source = source_cylinder(scanner, geom)
    radius = source.a_mm - source.wall_mm
    c1, c2, info = simulate_trues(cfg, scanner, source, float(rcfg["normalisation_decays"]), seed)
    counts, binned = ring_pair_counts(c1, c2, scanner, geom)
    model = model_counts(scanner, geom, radius)
    comp = estimate_components(counts, model)
    g, h = comp["radial"], comp["axial"]
    se_g = 1 / np.sqrt(comp["radial_counts"])
    se_h = 1 / np.sqrt(comp["axial_counts"])
    log.info(
        "radial factors %.3f .. %.3f (relative SE %.2f-%.2f %%), axial factors %.3f .. %.3f (median SE %.2f %%)",
        g.min(),
        g.max(),
        100 * se_g.min(),
        100 * se_g.max(),
        h.min(),
        h.max(),
        100 * float(np.median(se_h)),
    )
    return {
        "format": np.int64(FORMAT),
        "radial": g.astype(np.float64),
        "axial": h.astype(np.float64),
        "radial_counts": comp["radial_counts"],
        "axial_counts": comp["axial_counts"],
        "radial_mm": geom.radial_mm(),
        "counts": counts.astype(np.float32),
        "model": model.astype(np.float32),
        "crystals_per_ring": np.int64(scanner.crystals_per_ring),
        "rings": np.int64(scanner.rings),
        "t_lo": np.int64(geom.t_lo),
        "t_hi": np.int64(geom.t_hi),
        "lor_radius_mm": np.float64(geom.radius_mm),
        "mode": np.array(rcfg["mode"]),
        "source": np.array(
            f"uniform cylinder in air, radius {radius:.2f} mm, length {source.length_mm:.1f} mm, centred; "
            "positron range off; trues only"
        ),
        "source_radius_mm": np.float64(radius),
        "source_length_mm": np.float64(source.length_mm),
        "seed": np.int64(seed),
        "decays": np.int64(info["decays"]),
        "prompts": np.int64(info["prompts"]),
        "trues": np.int64(info["trues"]),
        "trues_binned": np.int64(binned),
        "simulation_seconds": np.float64(info["simulation_seconds"]),
        "kernel": np.array(cfg["simulation"]["kernel"]),
        "activity_bq": np.float64(cfg["phantom"]["activity_bq"]),
        "radial_relative_se_max": np.float64(se_g.max()),
        "axial_relative_se_median": np.float64(np.median(se_h)),
        "axial_relative_se_max": np.float64(se_h.max()),
        "method": np.array("component-based: cos^3 x radial g(t) x axial h(r1, r2) (Badawi & Marsden 1999)"),
    }
