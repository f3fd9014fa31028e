"""GATE 9 export: a ``cylindricalPET`` geometry macro and coincidences in GATE 9's classic ROOT layout.

GATE 9's ``cylindricalPET`` system numbers a crystal by four repeated volumes, (rsector,
module, submodule, crystal), each numbered by its own repeater. Our ring scanner
(``geometry/scanner.py``: crystal ``i`` of ring ``r`` at azimuth ``2 pi i / N``, radial, id
``r * N + i``) is reproduced exactly by

- one **rsector** per crystal column: a box ``crystal_depth`` deep, one crystal wide and the
  whole axial length long, centred at ``x = inner radius + depth / 2`` and repeated by a
  ``ring`` repeater N times (copy ``i`` rotated by ``360 i / N`` degrees about z);
- one **module** and one **submodule** per rsector (1 x 1 x 1 ``cubicArray`` repeaters, kept so
  readers that expect every level find it);
- **crystals** stacked along z by a 1 x 1 x ``rings`` ``cubicArray`` with the axial pitch
  (copy 0 at the most negative z, as our ring 0).

So ``rsectorID = CrystalID % N``, ``moduleID = submoduleID = layerID = gantryID = 0`` and
``crystalID = CrystalID // N``; pytomography's detector id (``ring * N + in-ring index``)
is then our CrystalID. The crystal box is the one the opengate engine builds
(:func:`positrongan.export.listmode.crystal_box_mm`).

Branches, types and units are GATE 9's (``GateRootDefs.cc``): time in s (double), energy in
MeV, positions in mm (float), ids and counts as int. Truth: ``sourcePos`` is our decay point;
``sourceID`` is 0 for the phantom's decays and 1 for the crystals' 176Lu background (our negative
EventIDs); ``comptonPhantom`` is our per-photon phantom scatter count ``PhantomScatters``, which counts
Compton and Rayleigh interactions together, so ``RayleighPhantom`` is 0 and their sum (what
readers use to flag scatter) is right. Counts we do not have are -1: ``comptonCrystal`` and
``RayleighCrystal`` always, and every phantom count of a file whose ``PhantomScatters`` is -1
(an opengate build that did not pass the phantom step counters through its readout chain). The volume-name string branches are not written. A scan
simulated without its truth branches (``simulation.write_truth: false``) is refused, naming the
key: GATE 9 has no "unknown" decay point, and readers classify randoms by ``sourcePos``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Mapping

import numpy as np

from ..errors import ArtifactError
from ..geometry.scanner import Scanner
from ..io import atomic_path, write_text
from ..rootfile import TRUTH_BRANCHES, tree_branches
from .listmode import STEP_ENTRIES, crystal_box_mm, has_tree, iter_chunks

log = logging.getLogger(__name__)

# GATE's int eventID wraps here; equality within a pair (what readers use) survives the wrap.
_INT32 = 2**31
# GATE's own rounded pi in ComputeSinogramTheta/S, kept so our sinogram branches equal GATE's.
_GATE_PI = 3.1416

# Our trees -> the GATE 9 tree names (a delayed-window sorter named "delay" writes tree "delay").
PAIR_TREES = {"Coincidences": "Coincidences", "Delayed": "delay"}

_ID_BRANCHES = ("gantryID", "rsectorID", "moduleID", "submoduleID", "crystalID", "layerID")
_COUNT_BRANCHES = ("comptonPhantom", "comptonCrystal", "RayleighPhantom", "RayleighCrystal")


def _single_schema(suffix: str) -> dict[str, type]:
    """GATE 9 branches of one single of a pair (suffix 1/2), in GATE's order."""
    out: dict[str, type] = {f"eventID{suffix}": np.int32, f"sourceID{suffix}": np.int32}
    out.update({f"sourcePos{c}{suffix}": np.float32 for c in "XYZ"})
    out[f"time{suffix}"] = np.float64
    out[f"energy{suffix}"] = np.float32
    out.update({f"globalPos{c}{suffix}": np.float32 for c in "XYZ"})
    out.update({f"{b}{suffix}": np.int32 for b in _ID_BRANCHES})
    out.update({f"{b}{suffix}": np.int32 for b in _COUNT_BRANCHES})
    return out


def coincidence_schema() -> dict[str, type]:
    """Branch -> type of GATE 9's ``Coincidences`` tree (cylindricalPET), in GATE's order."""
    out: dict[str, type] = {"runID": np.int32, "axialPos": np.float32, "rotationAngle": np.float32}
    out.update(_single_schema("1"))
    out.update(_single_schema("2"))
    out.update({"sinogramTheta": np.float32, "sinogramS": np.float32})
    return out


def singles_schema() -> dict[str, type]:
    """Branch -> type of GATE 9's ``Singles`` tree (cylindricalPET), in GATE's order."""
    out: dict[str, type] = {"runID": np.int32}
    out.update(_single_schema(""))
    out.update({"axialPos": np.float32, "rotationAngle": np.float32})
    return out


def gate9_ids(scanner: Scanner, crystal_id: np.ndarray) -> dict[str, np.ndarray]:
    """GATE 9 volume ids of our CrystalIDs (see the module docstring).

    Returns:
        dict ``gantryID, rsectorID, moduleID, submoduleID, crystalID, layerID`` -> int32 arrays.
    """
    ring, index = scanner.ring_and_index(np.asarray(crystal_id, dtype=np.int64))
    zero = np.zeros(ring.shape, np.int32)
    return {
        "gantryID": zero,
        "rsectorID": index.astype(np.int32),
        "moduleID": zero,
        "submoduleID": zero,
        "crystalID": ring.astype(np.int32),
        "layerID": zero,
    }


def crystal_id_from_gate9(scanner: Scanner, rsector: np.ndarray, crystal: np.ndarray) -> np.ndarray:
    """Inverse of :func:`gate9_ids` (module and submodule ids are always 0)."""
    return scanner.crystal_id(np.asarray(crystal, dtype=np.int64), np.asarray(rsector, dtype=np.int64))


def sinogram_theta_s(x1, y1, x2, y2) -> tuple[np.ndarray, np.ndarray]:
    """GATE 9's ``sinogramTheta`` (rad) and ``sinogramS`` (mm) of pairs, from the singles' positions.

    The formulas of ``GateRootCoincBuffer::ComputeSinogramTheta/S``, rounded pi included.
    """
    x1, y1, x2, y2 = (np.asarray(v, dtype=np.float64) for v in (x1, y1, x2, y2))
    dx, dy = x1 - x2, y1 - y2
    with np.errstate(divide="ignore", invalid="ignore"):
        th = np.where(dx != 0, np.arctan(dx / dy), _GATE_PI / 2)
        denom = dx * dx + dy * dy
        s = np.where(denom != 0, (x1 * (y2 - y1) + y1 * (x1 - x2)) / np.sqrt(denom), 0.0)
    theta = np.where((dx != 0) & (th < 0), th + _GATE_PI, th)
    s = np.where(((th > 0) & (dx > 0)) | ((th < 0) & (dx < 0)), -s, s)
    s = np.where(th < 0, -s, s)
    return theta.astype(np.float32), s.astype(np.float32)


def _single_columns(chunk: Mapping[str, np.ndarray], src: str, dst: str, scanner: Scanner) -> dict:
    """GATE 9 columns of one single (our suffix ``src``, GATE's suffix ``dst``) of a chunk."""
    n = len(chunk[f"CrystalID{src}"])
    event = np.asarray(chunk[f"EventID{src}"], dtype=np.int64)
    scat = np.asarray(chunk[f"PhantomScatters{src}"], dtype=np.int32)
    unknown = np.full(n, -1, np.int32)
    out = {
        f"eventID{dst}": (event % _INT32).astype(np.int32),
        # Source 0: the phantom; 1: the crystals' 176Lu (negative EventIDs, simulation.lyso_background).
        f"sourceID{dst}": (event < 0).astype(np.int32),
        f"time{dst}": np.asarray(chunk[f"GlobalTime{src}"], dtype=np.float64) * 1e-9,  # ns -> s
        f"energy{dst}": np.asarray(chunk[f"TotalEnergyDeposit{src}"], dtype=np.float32),  # MeV
        f"comptonPhantom{dst}": scat,
        f"comptonCrystal{dst}": unknown,
        f"RayleighPhantom{dst}": np.where(scat < 0, -1, 0).astype(np.int32),
        f"RayleighCrystal{dst}": unknown,
    }
    for c in "XYZ":
        out[f"sourcePos{c}{dst}"] = np.asarray(chunk[f"SourcePosition_{c}{src}"], dtype=np.float32)
        out[f"globalPos{c}{dst}"] = np.asarray(chunk[f"PostPosition_{c}{src}"], dtype=np.float32)
    for name, ids in gate9_ids(scanner, chunk[f"CrystalID{src}"]).items():
        out[f"{name}{dst}"] = ids
    return out


def coincidence_columns(chunk: Mapping[str, np.ndarray], scanner: Scanner) -> dict[str, np.ndarray]:
    """A chunk of our Coincidences/Delayed tree as GATE 9 ``Coincidences`` columns (schema order)."""
    n = len(chunk["CrystalID1"])
    cols = {
        "runID": np.zeros(n, np.int32),
        "axialPos": np.zeros(n, np.float32),
        "rotationAngle": np.zeros(n, np.float32),
    }
    cols.update(_single_columns(chunk, "1", "1", scanner))
    cols.update(_single_columns(chunk, "2", "2", scanner))
    cols["sinogramTheta"], cols["sinogramS"] = sinogram_theta_s(
        cols["globalPosX1"], cols["globalPosY1"], cols["globalPosX2"], cols["globalPosY2"]
    )
    return {k: cols[k] for k in coincidence_schema()}


def singles_columns(chunk: Mapping[str, np.ndarray], scanner: Scanner) -> dict[str, np.ndarray]:
    """A chunk of our Singles tree as GATE 9 ``Singles`` columns (schema order)."""
    n = len(chunk["CrystalID"])
    cols = {
        "runID": np.zeros(n, np.int32),
        "axialPos": np.zeros(n, np.float32),
        "rotationAngle": np.zeros(n, np.float32),
    }
    cols.update(_single_columns(chunk, "", "", scanner))
    return {k: cols[k] for k in singles_schema()}


def export_root(
    src: str | Path, dst: str | Path, scanner: Scanner, singles: bool = False, step: int = STEP_ENTRIES
) -> dict[str, int]:
    """Write a scan's coincidences (and delayed coincidences, and optionally singles) in GATE 9's layout.

    Streams ``step`` entries at a time; ``dst`` appears only when complete.

    Params:
        src: our simulation ROOT file (``results/sim/{scan}.root``).
        dst: the GATE 9 ROOT file to write.
        scanner: the configured scanner.
        singles: also write the ``Singles`` tree (the largest one).
        step: entries per chunk.
    Returns:
        dict GATE tree name -> entries written.
    Raises:
        ArtifactError: unreadable input, no truth branches (``simulation.write_truth`` was false),
            or ids beyond the configured scanner.
    """
    import uproot

    trees: list[tuple[str, str, tuple[str, ...]]] = [("Coincidences", "Coincidences", ("1", "2"))]
    if has_tree(src, "Delayed"):
        trees.append(("Delayed", PAIR_TREES["Delayed"], ("1", "2")))
    if singles:
        if not has_tree(src, "Singles"):
            raise ArtifactError(
                f"{src}: no Singles tree to export (config key 'export.gate9_singles' is true; "
                "the scan was simulated with 'simulation.write_singles' false?)"
            )
        trees.append(("Singles", "Singles", ("",)))
    for ours, _, suffixes in trees:
        have = tree_branches(src, ours)
        missing = [b + s for s in suffixes for b in TRUTH_BRANCHES if b + s not in have]
        if missing:
            raise ArtifactError(
                f"{src}: tree '{ours}' lacks the truth branches {missing[:2]}..., which GATE 9's sourcePos and "
                "comptonPhantom come from (readers classify randoms and scatters by them); simulate the scan "
                "with config key 'simulation.write_truth' true to export it as GATE 9"
            )
    counts: dict[str, int] = {}
    with atomic_path(dst) as tmp:
        # ZLIB, not our ZSTD: ROOT builds older than 6.20 (common next to GATE 9 and CASToR) lack ZSTD.
        with uproot.recreate(tmp, compression=uproot.ZLIB(1)) as f:
            for ours, theirs, suffixes in trees:
                schema = singles_schema() if suffixes == ("",) else coincidence_schema()
                convert = singles_columns if suffixes == ("",) else coincidence_columns
                f.mktree(theirs, schema, title=f"{theirs} (positrongan export of {ours}, GATE 9 layout)")
                counts[theirs] = 0
                for chunk in iter_chunks(src, ours, scanner, suffixes, step):
                    cols = convert(chunk, scanner)
                    if len(cols["runID"]):
                        f[theirs].extend(cols)
                        counts[theirs] += len(cols["runID"])
    return counts


def macro_text(scanner: Scanner, digitizer: Mapping | None = None) -> str:
    """A GATE 9 ``cylindricalPET`` geometry macro that reproduces our crystals and ids.

    Params:
        scanner: the configured scanner.
        digitizer: the ``digitizer`` config section, quoted in the header for reference.
    Returns:
        The macro text (mm, deg).
    """
    depth, width, axial = crystal_box_mm(scanner)
    n, rings = scanner.crystals_per_ring, scanner.rings
    length = scanner.axial_length_mm
    r_mid = scanner.inner_radius_mm + scanner.crystal_depth_mm / 2
    r_min = scanner.inner_radius_mm - 1.0
    r_max = math.hypot(scanner.outer_radius_mm, width / 2) + 1.0

    def f(v: float) -> str:
        return f"{v:.6f}"

    # Comment lines never quote a command: some readers (pytomography) grep the file for them.
    lines = [
        "# GATE 9 cylindricalPET geometry of the positrongan scanner (written by `positrongan export`).",
        f"# {rings} rings x {n} radial crystals; crystal pitch {scanner.crystal_pitch_mm:g} mm, axial pitch "
        f"{scanner.axial_pitch_mm:g} mm, depth {scanner.crystal_depth_mm:g} mm, inner radius "
        f"{scanner.inner_radius_mm:.4f} mm, material {scanner.crystal_material}.",
        "# One rsector per crystal column (ring repeater), one module and submodule per rsector,",
        "# crystals stacked along z. Our CrystalID = crystalID * N + rsectorID (docs/interop.md).",
    ]
    if digitizer is not None:
        lo, hi = digitizer["energy_window_kev"]
        lines.append(
            f"# Digitizer of the simulation: energy resolution {digitizer['energy_resolution']:g} FWHM at "
            f"{digitizer['energy_reference_mev'] * 1000:g} keV, time resolution {digitizer['time_resolution_ps']:g} ps "
            f"FWHM per single, energy window {lo:g}-{hi:g} keV, coincidence window "
            f"{digitizer['coincidence_window_ns']:g} ns, multiples policy {digitizer['multiples_policy']}."
        )
    lines += [
        "",
        "/gate/world/geometry/setXLength " + f(2 * (r_max + 50)) + " mm",
        "/gate/world/geometry/setYLength " + f(2 * (r_max + 50)) + " mm",
        "/gate/world/geometry/setZLength " + f(length + 200) + " mm",
        "/gate/world/setMaterial Air",
        "",
        "/gate/world/daughters/name cylindricalPET",
        "/gate/world/daughters/insert cylinder",
        "/gate/cylindricalPET/placement/setTranslation 0.0 0.0 0.0 mm",
        "/gate/cylindricalPET/geometry/setRmin " + f(r_min) + " mm",
        "/gate/cylindricalPET/geometry/setRmax " + f(r_max) + " mm",
        "/gate/cylindricalPET/geometry/setHeight " + f(length + 2) + " mm",
        "/gate/cylindricalPET/setMaterial Air",
        "",
    ]
    # rsector, module and submodule: nested boxes of the crystal column's size.
    parent = "cylindricalPET"
    for level, x in (("rsector", r_mid), ("module", 0.0), ("submodule", 0.0)):
        lines += [
            f"/gate/{parent}/daughters/name {level}",
            f"/gate/{parent}/daughters/insert box",
            f"/gate/{level}/placement/setTranslation {f(x)} 0.0 0.0 mm",
            f"/gate/{level}/geometry/setXLength {f(depth)} mm",
            f"/gate/{level}/geometry/setYLength {f(width)} mm",
            f"/gate/{level}/geometry/setZLength {f(length)} mm",
            f"/gate/{level}/setMaterial Air",
            "",
        ]
        parent = level
    lines += [
        "/gate/submodule/daughters/name crystal",
        "/gate/submodule/daughters/insert box",
        "/gate/crystal/placement/setTranslation 0.0 0.0 0.0 mm",
        f"/gate/crystal/geometry/setXLength {f(depth)} mm",
        f"/gate/crystal/geometry/setYLength {f(width)} mm",
        f"/gate/crystal/geometry/setZLength {f(axial)} mm",
        f"/gate/crystal/setMaterial {scanner.crystal_material}",
        "",
        "/gate/crystal/repeaters/insert cubicArray",
        "/gate/crystal/cubicArray/setRepeatNumberX 1",
        "/gate/crystal/cubicArray/setRepeatNumberY 1",
        f"/gate/crystal/cubicArray/setRepeatNumberZ {rings}",
        f"/gate/crystal/cubicArray/setRepeatVector 0.0 0.0 {f(scanner.axial_pitch_mm)} mm",
    ]
    for level in ("submodule", "module"):
        lines += [
            "",
            f"/gate/{level}/repeaters/insert cubicArray",
            f"/gate/{level}/cubicArray/setRepeatNumberX 1",
            f"/gate/{level}/cubicArray/setRepeatNumberY 1",
            f"/gate/{level}/cubicArray/setRepeatNumberZ 1",
            f"/gate/{level}/cubicArray/setRepeatVector 0.0 0.0 0.0 mm",
        ]
    lines += [
        "",
        "/gate/rsector/repeaters/insert ring",
        f"/gate/rsector/ring/setRepeatNumber {n}",
        "/gate/rsector/ring/setFirstAngle 0.0 deg",
        "",
        "/gate/systems/cylindricalPET/rsector/attach rsector",
        "/gate/systems/cylindricalPET/module/attach module",
        "/gate/systems/cylindricalPET/submodule/attach submodule",
        "/gate/systems/cylindricalPET/crystal/attach crystal",
        "/gate/crystal/attachCrystalSD",
        "",
    ]
    return "\n".join(lines)


def write_macro(path: str | Path, scanner: Scanner, digitizer: Mapping | None = None) -> None:
    """Write :func:`macro_text` atomically to ``path``."""
    write_text(path, macro_text(scanner, digitizer))
