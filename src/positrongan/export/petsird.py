"""PETSIRD export: a scan's list mode with the scanner description (``petsird`` package, binary stream).

Scanner model (one module type):

- a **module** is one ring: ``crystals_per_ring`` detecting elements, element ``i`` the crystal
  box of :func:`positrongan.export.listmode.crystal_box_mm` (local x along its depth from the front
  face, y tangential, z axial, centred in y and z) rotated to azimuth ``2 pi i / N`` with its
  front face at the inner radius;
- the module is **replicated** ``rings`` times along z (module ``r`` at ``Scanner.ring_z(r)``);
- one **energy bin**: the digitizer's energy window.

So ``DetectionBin = energy_index + (element_index + module_index * N) * 1`` is our CrystalID.
Each coincidence is stored with its larger detection bin first (PETSIRD requires
``detectionBin1 >= detectionBin2``) and the TOF bin of ``(t1 - t2) * c / 2`` for that order
(uniform bins of half the coincidence timing resolution, spanning the coincidence window; for a
delayed pair, ``t2`` less the delayed-window offset, as PETSIRD defines delayed coincidences).
Time blocks last 1 ms; an event goes to the block of its earlier single. Prompts come from
``Coincidences``, delayed coincidences from ``Delayed`` when the file has it. Detection
efficiencies are uniform (1): the simulated detector has no per-crystal variation.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

from ..errors import ArtifactError
from ..geometry.scanner import Scanner
from ..io import atomic_path
from .listmode import STEP_ENTRIES, crystal_box_mm, has_tree, iter_chunks

log = logging.getLogger(__name__)

C_MM_PER_PS = 0.299792458
BLOCK_MS = 1

# Scintillators of the scanner.crystal_material enum (as the opengate engine defines them):
# (atomic number, mass number, atoms per formula unit, standard atomic weight) and density g/cm3.
_MATERIALS = {
    "LYSO": ([(71, 175, 18, 174.967), (39, 89, 2, 88.906), (14, 28, 10, 28.085), (8, 16, 50, 15.999)], 7.1),
    "LSO": ([(71, 175, 2, 174.967), (14, 28, 1, 28.085), (8, 16, 5, 15.999)], 7.4),
    "BGO": ([(83, 209, 4, 208.980), (32, 74, 3, 72.630), (8, 16, 12, 15.999)], 7.13),
    "GSO": ([(64, 158, 2, 157.25), (14, 28, 1, 28.085), (8, 16, 5, 15.999)], 6.71),
}


def tof_bin_edges_mm(digitizer: Mapping) -> np.ndarray:
    """TOF bin edges (mm of ``(t1 - t2) c / 2``): bins of half the coincidence timing resolution
    (sqrt(2) x the single's), symmetric, spanning the coincidence window; one bin if no timing."""
    half_window = digitizer["coincidence_window_ns"] * 1000 * C_MM_PER_PS / 2
    ctr_mm = math.sqrt(2) * digitizer["time_resolution_ps"] * C_MM_PER_PS / 2
    if ctr_mm <= 0:
        return np.array([-half_window, half_window], np.float32)
    n_half = math.ceil(half_window / (ctr_mm / 2))
    return (np.arange(-n_half, n_half + 1) * (ctr_mm / 2)).astype(np.float32)


def _policy(digitizer: Mapping):
    import petsird

    return {
        "kill_all": petsird.CoincidencePolicy.REJECT_HIGHER_MULTIPLES,
        "take_all_good": petsird.CoincidencePolicy.MULTIPLES_AS_ALL_COINCIDENCES,
        "take_winner": petsird.CoincidencePolicy.OTHER,
    }[digitizer["multiples_policy"]]


def _transform(rot_deg: float, t: tuple[float, float, float]):
    import petsird

    a = math.radians(rot_deg)
    c, s = math.cos(a), math.sin(a)
    m = np.array([[c, -s, 0.0, t[0]], [s, c, 0.0, t[1]], [0.0, 0.0, 1.0, t[2]]], np.float32)
    return petsird.RigidTransformation(matrix=m)


def scanner_information(scanner: Scanner, digitizer: Mapping, delayed: bool):
    """The PETSIRD ``ScannerInformation`` of our scanner and digitizer (see the module docstring).

    Params:
        scanner: the configured scanner.
        digitizer: the ``digitizer`` config section.
        delayed: whether delayed coincidences are stored.
    """
    import petsird
    from petsird.helpers.create import initialize_scanner_information_dimensions

    depth, width, axial = crystal_box_mm(scanner)
    corners = [
        petsird.Coordinate(c=np.array([x, y, z], np.float32))
        for x in (0.0, depth)
        for y in (-width / 2, width / 2)
        for z in (-axial / 2, axial / 2)
    ]
    material = scanner.crystal_material
    crystal = petsird.BoxSolidVolume(shape=petsird.BoxShape(corners=corners), material_id=0)
    n = scanner.crystals_per_ring
    r_in = scanner.inner_radius_mm
    elements = petsird.ReplicatedBoxSolidVolume(
        object=crystal,
        transforms=[
            _transform(360.0 * i / n, (r_in * math.cos(2 * math.pi * i / n), r_in * math.sin(2 * math.pi * i / n), 0.0))
            for i in range(n)
        ],
    )
    rings = petsird.ReplicatedDetectorModule(
        object=petsird.DetectorModule(detecting_elements=elements),
        transforms=[_transform(0.0, (0.0, 0.0, float(z))) for z in scanner.ring_z(np.arange(scanner.rings))],
    )
    atoms, density = _MATERIALS[material]
    mass = [k * w for _, _, k, w in atoms]
    bulk = petsird.BulkMaterial(
        id=0,
        name=material,
        density=density,
        atoms=[petsird.Atom(mass_number=a, atomic_number=z) for z, a, _, _ in atoms],
        mass_fractions=[m / sum(mass) for m in mass],
    )
    info = petsird.ScannerInformation(
        model_name=f"positrongan ring {n} x {scanner.rings}",
        scanner_geometry=petsird.ScannerGeometry(replicated_modules=[rings]),
        bulk_materials=[bulk],
        collimator_type="NONE",
    )
    initialize_scanner_information_dimensions(
        info, 1, allocate_detection_bin_efficiencies=True, allocate_module_pair_efficiencies=True
    )
    info.tof_bin_edges[0][0] = petsird.BinEdges(edges=tof_bin_edges_mm(digitizer))
    info.tof_resolution[0][0] = math.sqrt(2) * digitizer["time_resolution_ps"] * C_MM_PER_PS / 2
    lo, hi = digitizer["energy_window_kev"]
    info.event_energy_bin_edges[0] = petsird.BinEdges(edges=np.array([lo, hi], np.float32))
    # energy_resolution is FWHM/E at the reference energy and scales as 1/sqrt(E).
    info.energy_resolution_at_511[0] = digitizer["energy_resolution"] * math.sqrt(
        digitizer["energy_reference_mev"] / 0.511
    )
    info.prompt_event_policy = _policy(digitizer)
    info.delayed_event_policy = _policy(digitizer) if delayed else petsird.CoincidencePolicy.NONE
    eff = info.detection_efficiencies
    eff.method_description = "simulation (positrongan): no per-crystal variation, all efficiencies 1"
    eff.calibration_factor = 1.0
    eff.detection_bin_efficiencies[0] = [1.0] * scanner.n_crystals
    # Every pair of rings is in coincidence, with one symmetry group (all ones).
    eff.module_pair_sgidlut[0][0] = [[0] * (r + 1) for r in range(scanner.rings)]
    eff.module_pair_efficiencies_vectors[0][0] = [
        petsird.ModulePairEfficiencies(values=[[1.0] * n for _ in range(n)], sgid=0)
    ]
    return info


def ordered_events(
    crystal1: np.ndarray, crystal2: np.ndarray, time1_ns: np.ndarray, time2_ns: np.ndarray, tof_edges_mm: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PETSIRD detection bins (larger first) and TOF bin of pairs.

    Returns:
        (bin1, bin2, tof_idx): uint32 arrays; a TOF outside the edges goes to the nearest end bin
        (only possible for pairs beyond the coincidence window, which the sorter never keeps).
    """
    c1 = np.asarray(crystal1, dtype=np.int64)
    c2 = np.asarray(crystal2, dtype=np.int64)
    swap = c2 > c1
    b1, b2 = np.where(swap, c2, c1), np.where(swap, c1, c2)
    t1 = np.where(swap, time2_ns, time1_ns)
    t2 = np.where(swap, time1_ns, time2_ns)
    tof_mm = (t1 - t2) * 1000 * C_MM_PER_PS / 2
    nbins = len(tof_edges_mm) - 1
    tof = np.clip(np.searchsorted(tof_edges_mm, tof_mm, side="right") - 1, 0, nbins - 1)
    return b1.astype(np.uint32), b2.astype(np.uint32), tof.astype(np.uint32)


def _blocks(
    path: Path, tree: str, scanner: Scanner, tof_edges: np.ndarray, offset_ns: float, step: int
) -> Iterator[tuple[int, tuple]]:
    """(block index, (bin1, bin2, tof)) of one pair tree, block by block in time order.

    ``offset_ns`` is taken off the second single's time for the TOF: a delayed pair's partner
    arrives one delayed-window offset late (0 for prompts).

    The sorter writes pairs in time order, so a block is complete once a later one starts; a
    pair earlier than a block already emitted means the file is not time-ordered (error).
    """
    pending: dict[int, list[tuple]] = {}
    done = -1
    for chunk in iter_chunks(path, tree, scanner, ("1", "2"), step):
        t1, t2 = chunk["GlobalTime1"].astype(np.float64), chunk["GlobalTime2"].astype(np.float64)
        k = (np.minimum(t1, t2) // (BLOCK_MS * 1e6)).astype(np.int64)
        if len(k) and k.min() <= done:
            raise ArtifactError(
                f"{path}: tree '{tree}' is not in time order; cannot stream it into PETSIRD time blocks"
            )
        b1, b2, tof = ordered_events(chunk["CrystalID1"], chunk["CrystalID2"], t1, t2 - offset_ns, tof_edges)
        # Stable grouping keeps the file order inside each block.
        order = np.argsort(k, kind="stable")
        ks, starts = np.unique(k[order], return_index=True)
        for j, kb in enumerate(ks):
            sel = order[starts[j] : (starts[j + 1] if j + 1 < len(starts) else len(order))]
            pending.setdefault(int(kb), []).append((b1[sel], b2[sel], tof[sel]))
        top = int(k.max()) if len(k) else done
        for kb in sorted(kb for kb in pending if kb < top):
            yield kb, _concat(pending.pop(kb))
            done = kb
    for kb in sorted(pending):
        yield kb, _concat(pending.pop(kb))


def _concat(parts: list[tuple]) -> tuple:
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))


def _events(arrays: tuple | None) -> list:
    import petsird

    if arrays is None:
        return []
    b1, b2, tof = (a.tolist() for a in arrays)
    return [petsird.CoincidenceEvent(detection_bins=[x, y], tof_idx=t) for x, y, t in zip(b1, b2, tof)]


def export_petsird(
    src: str | Path, dst: str | Path, scanner: Scanner, digitizer: Mapping, step: int = STEP_ENTRIES
) -> dict[str, int]:
    """Write a scan's prompts (and delayed coincidences) as a binary PETSIRD stream.

    Streams ``step`` pairs at a time and one 1 ms time block at a time; ``dst`` appears only
    when complete.

    Params:
        src: our simulation ROOT file.
        dst: the PETSIRD file (``.petsird``, yardl binary).
        scanner: the configured scanner.
        digitizer: the ``digitizer`` config section (energy window, timing, policy).
        step: entries per chunk.
    Returns:
        dict with the counts written: ``prompts``, ``delayed``, ``time_blocks``.
    """
    import petsird

    src = Path(src)
    delayed = has_tree(src, "Delayed")
    info = scanner_information(scanner, digitizer, delayed)
    edges = tof_bin_edges_mm(digitizer)
    streams = {"prompts": _blocks(src, "Coincidences", scanner, edges, 0.0, step)}
    if delayed:
        streams["delayed"] = _blocks(src, "Delayed", scanner, edges, digitizer["delayed_offset_ns"], step)
    heads = {name: next(it, None) for name, it in streams.items()}
    counts = {"prompts": 0, "delayed": 0, "time_blocks": 0}
    with atomic_path(dst) as tmp:
        with petsird.BinaryPETSIRDWriter(str(tmp)) as writer:
            writer.write_header(petsird.Header(scanner=info, exam=None))
            k = 0
            # Consecutive blocks from 0 to the last event, empty ones included, so the
            # blocks cover the acquisition.
            while any(h is not None for h in heads.values()):
                here = {}
                for name, h in heads.items():
                    if h is not None and h[0] == k:
                        here[name] = h[1]
                        heads[name] = next(streams[name], None)
                prompts = _events(here.get("prompts"))
                block = petsird.EventTimeBlock(
                    time_interval=petsird.TimeInterval(start=k * BLOCK_MS, stop=(k + 1) * BLOCK_MS),
                    prompt_events=[[prompts]],
                    delayed_events=[[_events(here.get("delayed"))]] if delayed else [],
                )
                counts["prompts"] += len(prompts)
                counts["delayed"] += len(block.delayed_events[0][0]) if delayed else 0
                writer.write_time_blocks((petsird.TimeBlock.EventTimeBlock(block),))
                counts["time_blocks"] += 1
                k += 1
    return counts


def read_petsird(path: str | Path) -> tuple[object, dict[str, np.ndarray]]:
    """Read a PETSIRD file back with the ``petsird`` reader (the round-trip check).

    Returns:
        (header, dict ``prompts`` / ``delayed`` -> (n, 3) int64 arrays of (bin1, bin2, tof_idx),
        plus ``block_start_ms`` of each block).
    """
    import petsird

    out: dict[str, list] = {"prompts": [], "delayed": [], "block_start_ms": []}
    with petsird.BinaryPETSIRDReader(str(path)) as reader:
        header = reader.read_header()
        for tb in reader.read_time_blocks():
            if not isinstance(tb, petsird.TimeBlock.EventTimeBlock):
                continue
            out["block_start_ms"].append(tb.value.time_interval.start)
            for name, lists in (("prompts", tb.value.prompt_events), ("delayed", tb.value.delayed_events)):
                if lists:
                    out[name] += [(e.detection_bins[0], e.detection_bins[1], e.tof_idx) for e in lists[0][0]]
    arrays = {k: np.asarray(v, dtype=np.int64).reshape(-1, 3) for k, v in out.items() if k != "block_start_ms"}
    arrays["block_start_ms"] = np.asarray(out["block_start_ms"], dtype=np.int64)
    return header, arrays
