"""The GATE engine: the same scene in opengate 10 (Geant4), written in the same ROOT schema.

Scene:
- world of air; the tube as a voxelised ``Image`` volume built from the phantom's material map
  (the elliptical, bent, non-uniform tube and its defects are not Geant4 solids; 0.5 mm voxels);
- the scanner: one ``Tubs`` per ring (repeated along z, copy number = ring) holding a ``Box``
  crystal repeated around the ring (copy number = in-ring index, azimuth 2 pi i / n), so the
  crystal id ``ring * crystals_per_ring + index`` is read from the copy numbers;
- the source: a ``VoxelSource`` (opengate's GenericSource restricted to an activity image),
  the fluid map, emitting ``e+`` with the F18 spectrum when ``phantom.positron_range`` is on,
  otherwise ``back_to_back`` 511 keV pairs with the configured acollinearity;
- the digitizer chain, from the same ``digitizer`` keys as the fast engine: hits -> readout per
  crystal (``readout_policy``: energy winner or energy-weighted centroid; ``readout_discretize``:
  the position moved to the crystal centre) -> energy blur (inverse-square law) -> time blur
  (Gaussian) -> energy window, written to ROOT;
- the truth: per-photon Compton and Rayleigh counts in the phantom (auxiliary attributes of the
  hits, so ``PhantomScatters`` separates trues from scatters as in the fast engine);
- physics: ``simulation.rayleigh: false`` inactivates Geant4's Rayleigh process for gammas; the
  source emits at ``activity_bq`` x the F-18 beta+ fraction;
- with ``simulation.lyso_background``, the crystals' 176Lu as ``ion 71 176`` sources confined to
  the crystals (:func:`add_lyso_sources`; radioactive decay switched on), whose singles get
  negative EventIDs as in the fast engine.

opengate is imported only here, and only after checking the Geant4 datasets: importing it
without them starts a ~2 GB download (DESIGN.md §4). With ``GATEONRTD=1`` the import skips
that; the scene is then fully buildable (and tested) but cannot run.
"""

from __future__ import annotations

import glob
import importlib.util
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import ConfigError
from ..geometry.phantom import AIR, DEPOSIT, FLUID, GAS, WALL, TubePhantom
from ..geometry.scanner import Scanner
from .lyso import BackgroundCount
from .settings import GATE_READOUT_POLICY, Acquisition, Digitizer
from .settings import crystal_box_mm as _crystal_box_mm

log = logging.getLogger(__name__)

# Geant4 datasets the EM + decay physics of this scene need (opengate_core/geant4_data/<name>*).
REQUIRED_DATA = {
    "G4LEDATA": "G4EMLOW",
    "G4ENSDFSTATEDATA": "G4ENSDFSTATE",
    "G4LEVELGAMMADATA": "PhotonEvaporation",
    "G4RADIOACTIVEDATA": "RadioactiveDecay",
}
G4_MATERIALS = {
    "Air": "G4_AIR",
    "Water": "G4_WATER",
    "Al": "G4_Al",
    "CaCO3": "G4_CALCIUM_CARBONATE",
    "Fe2O3": "G4_FERRIC_OXIDE",
    "Al2O3": "G4_ALUMINUM_OXIDE",
}
HOW_TO_GET_DATA = (
    "on a machine with internet run `opengate_info` (or `python -c 'import opengate'`) once, which downloads "
    "the Geant4 datasets (~2 GB) into opengate_core/geant4_data, and copy that folder here; or set the "
    "G4LEDATA, G4ENSDFSTATEDATA, G4LEVELGAMMADATA and G4RADIOACTIVEDATA variables to existing dataset folders"
)
VOXEL_MM = 0.5


def geant4_data_missing() -> list[str]:
    """Names of the required Geant4 datasets that are absent (empty list: all present).

    Looks at the ``G4*DATA`` environment variables first, then at opengate_core's
    ``geant4_data`` folder, without importing opengate_core (that would start the download).
    """
    spec = importlib.util.find_spec("opengate_core")
    folder = (
        Path(spec.submodule_search_locations[0]) / "geant4_data" if spec and spec.submodule_search_locations else None
    )
    missing = []
    for var, prefix in REQUIRED_DATA.items():
        env = os.environ.get(var)
        if env and Path(env).is_dir():
            continue
        if folder is not None and glob.glob(str(folder / f"{prefix}*")):
            continue
        missing.append(var)
    return missing


def availability() -> tuple[bool, str]:
    """Whether the gate engine can run here, and why not."""
    if importlib.util.find_spec("opengate") is None:
        return False, "opengate is not installed (pip install 'positrongan[gate]')"
    missing = geant4_data_missing()
    if missing:
        return False, f"opengate is installed but the Geant4 datasets {missing} are missing"
    return True, "opengate and the Geant4 datasets are present"


def import_opengate(require_data: bool):
    """Import opengate safely.

    Params:
        require_data: raise when the Geant4 data are missing (needed to run, not to build).
    Returns:
        The ``opengate`` module.
    Raises:
        ConfigError: opengate missing, or data missing while required (says how to get them).
    """
    if importlib.util.find_spec("opengate") is None:
        raise ConfigError("config key 'simulation.engine' = 'gate' needs opengate: pip install 'positrongan[gate]'")
    missing = geant4_data_missing()
    if missing:
        if require_data:
            raise ConfigError(
                f"config key 'simulation.engine' = 'gate' needs the Geant4 datasets {missing}, which are not here: "
                f"{HOW_TO_GET_DATA}. Or use engine 'fast' (or 'auto')."
            )
        # Building the scene needs no data; this stops the import from trying to download them.
        os.environ["GATEONRTD"] = "1"
    import opengate

    return opengate


def crystal_box_mm(scanner: Scanner) -> list[float]:
    """Crystal box size (radial depth, tangential width, axial width) in mm: the shape both engines
    use (:func:`.settings.crystal_box_mm`)."""
    return _crystal_box_mm(scanner)


# Per-photon phantom-scatter truth: Geant4 steps of these processes in the phantom volume, counted
# per track and inherited by the secondaries (the electrons that deposit in the crystals), as
# auxiliary attributes of the hits (name -> Geant4 process name).
PHANTOM_SCATTER_ATTRIBUTES = {"PhantomCompton": "compt", "PhantomRayleigh": "Rayl"}


def phantom_label_image(tube: TubePhantom, voxel_mm: float = VOXEL_MM) -> tuple[np.ndarray, np.ndarray]:
    """Material-id image of the tube (z, y, x) and its voxel-[0,0,0] centre (x, y, z) in mm."""
    r = tube.bounding_radius_mm
    n_xy = int(math.ceil(2 * r / voxel_mm))
    n_z = int(math.ceil((tube.length_mm + 2) / voxel_mm))
    xs = (np.arange(n_xy) - (n_xy - 1) / 2) * voxel_mm
    zs = (np.arange(n_z) - (n_z - 1) / 2) * voxel_mm
    yy, xx = np.meshgrid(xs, xs, indexing="ij")
    img = np.zeros((n_z, n_xy, n_xy), np.uint8)
    for k, z in enumerate(zs):
        img[k] = tube.classify(xx, yy, np.full(xx.shape, z))
    return img, np.array([xs[0], xs[0], zs[0]])


def _write_mhd(path: Path, array: np.ndarray, spacing_mm: float, origin_xyz: np.ndarray) -> None:
    import itk

    image = itk.image_from_array(np.ascontiguousarray(array))
    image.SetSpacing([spacing_mm] * 3)
    image.SetOrigin([float(v) for v in origin_xyz])
    itk.imwrite(image, str(path))


def build_simulation(
    tube: TubePhantom,
    scanner: Scanner,
    digitizer: Digitizer,
    acquisition: Acquisition,
    seed: int,
    workdir: str | Path,
    require_data: bool = True,
):
    """Build (not run) the opengate Simulation of one scan.

    Params:
        tube: the scan's phantom.
        scanner: the scanner.
        digitizer: the digitizer settings (blurs, window).
        acquisition: activity, duration, source and physics settings.
        seed: the scan's Geant4 seed (``derived_seed(cfg, "gate", scan)``).
        workdir: folder for the phantom images and GATE's own ROOT output.
        require_data: check the Geant4 datasets (tests build without them).
    Returns:
        (simulation, path of GATE's singles ROOT file, name of the final singles tree).
    """
    gate = import_opengate(require_data)
    from opengate.geometry.utility import get_circular_repetition

    u = gate.g4_units
    mm, keV, ps, sec, Bq, deg = u.mm, u.keV, u.ps, u.second, u.Bq, u.deg
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    sim = gate.Simulation()
    sim.random_seed = seed % (2**31 - 1)
    sim.number_of_threads = acquisition.gate_threads
    sim.visu = False
    sim.progress_bar = False
    sim.output_dir = str(workdir)
    sim.world.size = [2 * (scanner.outer_radius_mm + 50) * mm] * 2 + [(scanner.axial_length_mm + 200) * mm]
    sim.world.material = "G4_AIR"
    db = sim.volume_manager.material_database
    db.add_material_nb_atoms("LYSO", ["Lu", "Y", "Si", "O"], [18, 2, 10, 50], 7.1 * u.g_cm3)
    db.add_material_nb_atoms("LSO", ["Lu", "Si", "O"], [2, 1, 5], 7.4 * u.g_cm3)
    db.add_material_nb_atoms("BGO", ["Bi", "Ge", "O"], [4, 3, 12], 7.13 * u.g_cm3)
    db.add_material_nb_atoms("GSO", ["Gd", "Si", "O"], [2, 1, 5], 6.71 * u.g_cm3)

    # ---- phantom: voxelised material map and activity map ---------------------------------------
    labels, origin = phantom_label_image(tube)
    label_path, act_path = workdir / "phantom_labels.mhd", workdir / "phantom_activity.mhd"
    _write_mhd(label_path, labels.astype(np.float32), VOXEL_MM, origin)
    _write_mhd(act_path, (labels == FLUID).astype(np.float32), VOXEL_MM, origin)
    phantom = sim.add_volume("Image", "phantom")
    phantom.image = str(label_path)
    phantom.material = "G4_AIR"
    names = tube.materials
    phantom.voxel_materials = [
        [AIR - 0.5, AIR + 0.5, G4_MATERIALS[names[AIR]]],
        [FLUID - 0.5, FLUID + 0.5, G4_MATERIALS[names[FLUID]]],
        [WALL - 0.5, WALL + 0.5, G4_MATERIALS[names[WALL]]],
        [DEPOSIT - 0.5, DEPOSIT + 0.5, G4_MATERIALS[names[DEPOSIT]]],
        [GAS - 0.5, GAS + 0.5, G4_MATERIALS[names[GAS]]],
    ]

    # ---- scanner: rings of repeated crystals ----------------------------------------------------
    ring = sim.add_volume("Tubs", "ring")
    ring.rmin = (scanner.inner_radius_mm - 1.0) * mm
    ring.rmax = (scanner.outer_radius_mm + 2.0) * mm
    ring.dz = scanner.axial_pitch_mm / 2 * mm
    ring.material = "G4_AIR"
    ring.translation = [[0, 0, float(z) * mm] for z in scanner.ring_z(np.arange(scanner.rings))]
    crystal = sim.add_volume("Box", "crystal")
    crystal.mother = ring.name
    crystal.size = [v * mm for v in crystal_box_mm(scanner)]
    crystal.material = scanner.crystal_material
    r_mid = (scanner.inner_radius_mm + scanner.crystal_depth_mm / 2) * mm
    tr, rot = get_circular_repetition(scanner.crystals_per_ring, [r_mid, 0, 0], start_angle_deg=0, axis=[0, 0, 1])
    crystal.translation = tr
    crystal.rotation = rot

    # ---- physics -------------------------------------------------------------------------------
    sim.physics_manager.physics_list_name = "G4EmStandardPhysics_option4"
    sim.physics_manager.enable_decay = False
    sim.physics_manager.global_production_cuts.all = 1 * mm
    if not acquisition.rayleigh:
        # The EM list always builds Rayleigh; the process table switches it off for gammas.
        sim.g4_commands_after_init.append("/process/inactivate Rayl gamma")
    scatter_attributes = []
    for name, process in PHANTOM_SCATTER_ATTRIBUTES.items():
        att = sim.activate_auxiliary_attribute("ProcessDefinedStepInVolumeAttribute", name)
        att.process_name = process
        att.volume_name = phantom.name
        att.propagate_from_parent_track = True
        scatter_attributes.append(name)

    # ---- source ---------------------------------------------------------------------------------
    src = sim.add_source("VoxelSource", "fluid_source")
    src.image = str(act_path)
    src.attached_to = phantom.name
    # Only beta+ decays emit (e+ or the photon pair); activity_bq stays the decay rate.
    src.activity = acquisition.activity_bq * acquisition.beta_plus_fraction * Bq
    src.direction.type = "iso"
    if acquisition.positron_range:
        src.particle = "e+"
        src.energy.type = "F18"
    else:
        src.particle = "back_to_back"
        src.energy.type = "mono"
        src.energy.mono = 511 * keV
        src.direction.accolinearity_flag = acquisition.acollinearity_fwhm_deg > 0
        src.direction.accolinearity_fwhm = acquisition.acollinearity_fwhm_deg * deg
    sim.run_timing_intervals = [[0, acquisition.acquisition_s * sec]]
    if acquisition.lyso_activity_bq > 0:
        add_lyso_sources(sim, scanner, acquisition.lyso_activity_bq, crystal.name)

    # ---- digitizer chain -------------------------------------------------------------------------
    out = workdir / "gate_singles.root"
    hits = sim.add_actor("DigitizerHitsCollectionActor", "Hits")
    hits.attached_to = crystal.name
    hits.authorize_repeated_volumes = True
    hits.attributes = [
        "PostPosition",
        "TotalEnergyDeposit",
        "PreStepUniqueVolumeID",
        "GlobalTime",
        "EventID",
        "EventPosition",
        *scatter_attributes,
    ]
    hits.output_filename = str(out)
    if digitizer.readout != "crystal":
        raise ConfigError(
            f"config key 'digitizer.readout' = {digitizer.readout!r} is not supported by the gate engine "
            "(GATE reads out per crystal): use 'crystal', or simulation.engine: fast"
        )
    if digitizer.readout_discretize:
        # Readout = adder + the position moved to the centre of the crystal.
        readout = sim.add_actor("DigitizerReadoutActor", "Readout")
        readout.discretize_volume = crystal.name
    else:
        readout = sim.add_actor("DigitizerAdderActor", "Readout")
    readout.attached_to = crystal.name
    readout.authorize_repeated_volumes = True
    readout.input_digi_collection = hits.name
    readout.group_volume = crystal.name
    readout.policy = GATE_READOUT_POLICY[digitizer.readout_policy]
    readout.output_filename = str(out)
    eblur = sim.add_actor("DigitizerBlurringActor", "EnergyBlur")
    eblur.attached_to = crystal.name
    eblur.authorize_repeated_volumes = True
    eblur.input_digi_collection = readout.name
    eblur.blur_attribute = "TotalEnergyDeposit"
    eblur.blur_method = "InverseSquare"
    eblur.blur_resolution = digitizer.energy_resolution
    eblur.blur_reference_value = digitizer.energy_reference_mev * 1000 * keV
    eblur.output_filename = str(out)
    tblur = sim.add_actor("DigitizerBlurringActor", "TimeBlur")
    tblur.attached_to = crystal.name
    tblur.authorize_repeated_volumes = True
    tblur.input_digi_collection = eblur.name
    tblur.blur_attribute = "GlobalTime"
    tblur.blur_method = "Gaussian"
    tblur.blur_fwhm = digitizer.time_resolution_ps * ps
    tblur.output_filename = str(out)
    window = sim.add_actor("DigitizerEnergyWindowsActor", "EnergyWindow")
    window.attached_to = crystal.name
    window.authorize_repeated_volumes = True
    window.input_digi_collection = tblur.name
    lo, hi = digitizer.energy_window_kev
    window.channels = [{"name": "Singles", "min": lo * keV, "max": hi * keV}]
    window.output_filename = str(out)
    sim.add_actor("SimulationStatisticsActor", "Stats")
    return sim, out, "Singles"


LYSO_SOURCE_PREFIX = "lyso_lu176_"


def add_lyso_sources(sim, scanner: Scanner, activity_bq: float, crystal_name: str) -> list:
    """The crystals' 176Lu background (``simulation.lyso_background``) as opengate ion sources.

    Geant4's radioactive decay gives the beta spectrum and the 176Hf cascade (with internal
    conversion) itself. Geant4's confinement takes one physical-volume name, and the crystal is a
    repeated volume whose copies around a ring are the physical volumes ``<crystal>_rep_<i>`` (each
    placed in every ring), so the activity is one source per crystal column i: a box covering the
    column's crystals (all rings), confined to ``<crystal>_rep_<i>`` (the 0.1 % of the box between
    rings is resampled), with activity_bq / crystals_per_ring. The ion's lifetime is set to 0
    (``user_particle_life_time``; what opengate does for ion sources with a half-life) so it decays
    at the source's event time instead of ~1e10 years later.

    Params:
        sim: the opengate Simulation.
        scanner: the scanner.
        activity_bq: total 176Lu activity of the crystals [Bq].
        crystal_name: the repeated crystal volume.
    Returns:
        The sources, in crystal-index order.
    """
    from scipy.spatial.transform import Rotation

    from .lyso import LU176_HALF_LIFE_S

    import opengate as gate

    u = gate.g4_units
    mm, sec, Bq = u.mm, u.second, u.Bq
    sim.physics_manager.enable_decay = True
    depth, width, _ = crystal_box_mm(scanner)
    r_mid = scanner.inner_radius_mm + depth / 2
    n = scanner.crystals_per_ring
    sources = []
    for i in range(n):
        phi = 2 * math.pi * i / n
        src = sim.add_source("GenericSource", f"{LYSO_SOURCE_PREFIX}{i}")
        src.particle = "ion 71 176"
        src.energy.type = "mono"
        src.energy.mono = 0
        src.direction.type = "iso"
        src.position.type = "box"
        src.position.size = [depth * mm, width * mm, scanner.axial_length_mm * mm]
        src.position.translation = [r_mid * math.cos(phi) * mm, r_mid * math.sin(phi) * mm, 0]
        src.position.rotation = Rotation.from_euler("z", phi).as_matrix()
        src.position.confine = f"{crystal_name}_rep_{i}"
        src.activity = activity_bq / n * Bq
        src.half_life = LU176_HALF_LIFE_S * sec
        src.user_particle_life_time = 0
        sources.append(src)
    return sources


def mark_background_events(event: np.ndarray, x: np.ndarray, y: np.ndarray, scanner: Scanner) -> np.ndarray:
    """GATE EventIDs with the crystals' 176Lu decays made negative (-(id + 1)), as the fast engine
    numbers them: a decay is the background's when its position (GATE's EventPosition, x, y in mm)
    lies in the crystal ring; the phantom is well inside the bore. Pairs of one decay stay pairs."""
    crystal_born = np.hypot(x, y) >= scanner.inner_radius_mm - 0.5
    return np.where(crystal_born, -(np.asarray(event, np.int64) + 1), event).astype(np.int64)


def crystal_ids_from_volume_ids(volume_ids: np.ndarray, scanner: Scanner) -> np.ndarray:
    """CrystalID from GATE's PreStepUniqueVolumeID strings (``..._<ring copy>_<crystal copy>``)."""
    parts = [str(v).replace("-", "_").split("_") for v in volume_ids]
    ring = np.array([int(p[-2]) for p in parts], dtype=np.int64)
    index = np.array([int(p[-1]) for p in parts], dtype=np.int64)
    return scanner.crystal_id(ring, index).astype(np.int32)


class GateEngine:
    """The GATE engine for one scan: runs opengate, then hands its singles to the scan driver.

    ``PhantomScatters`` counts the Compton and Rayleigh steps of the single's photon (its largest
    deposit's track and ancestors) in the phantom volume (:data:`PHANTOM_SCATTER_ATTRIBUTES`), as
    the fast engine does; ``SourcePosition`` is GATE's ``EventPosition``.

    Params:
        tube, scanner, digitizer, acquisition: as :func:`build_simulation`.
        seed: the scan's Geant4 seed.
        workdir: folder for GATE's temporary files (a temporary folder is made inside it).
    Raises:
        ConfigError: opengate or the Geant4 datasets are missing (checked here, before any run).
    """

    separates_scatter = True
    expected_chunks = 1

    def __init__(
        self,
        tube: TubePhantom,
        scanner: Scanner,
        digitizer: Digitizer,
        acquisition: Acquisition,
        seed: int,
        workdir: str | Path,
    ):
        import_opengate(require_data=True)
        if digitizer.readout != "crystal":
            raise ConfigError(
                f"config key 'digitizer.readout' = {digitizer.readout!r} is not supported by the gate engine "
                "(GATE reads out per crystal): use 'crystal', or simulation.engine: fast"
            )
        self.tube, self.scanner, self.digitizer, self.acq = tube, scanner, digitizer, acquisition
        self.seed = seed
        self.workdir = Path(workdir)
        self.background = BackgroundCount(acquisition.lyso_activity_bq) if acquisition.lyso_activity_bq > 0 else None

    def compile(self) -> None:
        """Nothing to compile."""

    def chunks(self, rng: np.random.Generator) -> Iterator[tuple[dict[str, np.ndarray], None, None]]:
        """The whole scan as one chunk: (singles, None (complete), None (GATE draws the number of
        decays itself)). ``rng`` is unused: Geant4 is seeded with ``seed``."""
        import uproot

        with tempfile.TemporaryDirectory(prefix="gate_", dir=self.workdir) as tmp:
            sim, out, tree = build_simulation(
                self.tube, self.scanner, self.digitizer, self.acq, self.seed, tmp, require_data=True
            )
            sim.run(start_new_process=True)
            with uproot.open(out) as f:
                g = f[tree].arrays(library="np")
        n = len(g["GlobalTime"])
        vol = np.asarray(g["PreStepUniqueVolumeID"]).astype(str)
        event = g["EventID"].astype(np.int64)
        if self.background is not None:
            event = mark_background_events(event, g["EventPosition_X"], g["EventPosition_Y"], self.scanner)
        singles = {
            "EventID": event,
            "GlobalTime": g["GlobalTime"].astype(np.float64),
            "TotalEnergyDeposit": g["TotalEnergyDeposit"].astype(np.float64),
            "PostPosition_X": g["PostPosition_X"],
            "PostPosition_Y": g["PostPosition_Y"],
            "PostPosition_Z": g["PostPosition_Z"],
            "PreStepUniqueVolumeID": vol,
            "CrystalID": crystal_ids_from_volume_ids(vol, self.scanner),
            "PhantomScatters": self._phantom_scatters(g, n),
            "SourcePosition_X": g["EventPosition_X"].astype(np.float32),
            "SourcePosition_Y": g["EventPosition_Y"].astype(np.float32),
            "SourcePosition_Z": g["EventPosition_Z"].astype(np.float32),
        }
        yield singles, None, None

    def _phantom_scatters(self, g: dict, n: int) -> np.ndarray:
        """Compton + Rayleigh steps in the phantom per single, from the auxiliary attributes; -1
        (unknown, trues and scatters then not separated) if this opengate did not write them."""
        missing = [a for a in PHANTOM_SCATTER_ATTRIBUTES if a not in g]
        if missing:
            log.warning("GATE output lacks %s: PhantomScatters = -1 (trues and scatters not separated)", missing)
            self.separates_scatter = False
            return np.full(n, -1, np.int16)
        self.separates_scatter = True
        return sum(np.asarray(g[a], dtype=np.int64) for a in PHANTOM_SCATTER_ATTRIBUTES).astype(np.int16)
