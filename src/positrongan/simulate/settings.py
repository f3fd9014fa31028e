"""Typed, validated settings of a scan's simulation, built once from the config and handed to the
engines (which then never read raw config sections): the digitizer and the acquisition."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
# F-18 decays by beta+ in 96.86 % of decays, by electron capture otherwise (NNDC / DDEP
# recommended data for 18F: I(beta+) = 96.86 (19) %).
F18_BETA_PLUS_FRACTION = 0.9686
READOUTS = ("crystal", "annulus")
READOUT_POLICIES = ("energy_winner", "energy_centroid")
# GATE adder policy names of the readout policies.
GATE_READOUT_POLICY = {"energy_winner": "EnergyWinnerPosition", "energy_centroid": "EnergyWeightedCentroidPosition"}


def lyso_activity_bq(cfg: Mapping) -> float:
    """The 176Lu background activity [Bq] of a validated config: 0 unless
    ``simulation.lyso_background``, else the crystals' (:func:`.lyso.background_activity_bq`, with
    ``simulation.lyso_bq_per_g`` when set)."""
    s = cfg["simulation"]
    if not s["lyso_background"]:
        return 0.0
    from ..geometry.scanner import Scanner
    from .lyso import background_activity_bq

    return background_activity_bq(Scanner.from_config(cfg["scanner"]), s["lyso_bq_per_g"])


def crystal_box_mm(scanner) -> list[float]:
    """Crystal box size (radial depth, tangential width, axial width) in mm: the one crystal shape
    both engines use.

    Box crystals, centred at mid-depth on the crystal's azimuth: the tangential width is the
    chord at the inner radius (a hair smaller), so neighbouring boxes touch at their front faces
    without overlapping and leave wedge-shaped gaps (air) that open towards the back (about 8 %
    less LYSO than the gapless annulus with the default scanner); rings are 0.1 % thinner than
    the axial pitch.
    """
    width = 2 * scanner.inner_radius_mm * math.sin(math.pi / scanner.crystals_per_ring) * 0.999
    return [scanner.crystal_depth_mm, width, scanner.axial_pitch_mm * 0.999]


@dataclass(frozen=True)
class Digitizer:
    """The digitizer chain and the coincidence sorter (config section ``digitizer``).

    Attributes:
        energy_resolution: FWHM / E at ``energy_reference_mev``.
        energy_reference_mev: reference energy of the resolution [MeV].
        time_resolution_ps: FWHM of one single's time [ps].
        energy_window_kev: (low, high) window on blurred singles [keV].
        coincidence_window_ns: prompt window [ns].
        multiples_policy: ``take_all_good`` | ``kill_all`` | ``take_winner``.
        delayed_window: record delayed coincidences.
        delayed_offset_ns: offset of the delayed window [ns].
        readout: ``crystal`` (GATE's readout with ``group_volume`` = crystal: the deposits of one
            decay are summed per crystal, box crystals with wedge gaps) or ``annulus`` (the deposits
            of one photon are summed over a gapless LYSO annulus, then located in a crystal).
        readout_policy: ``energy_winner`` (position of the largest deposit; GATE's
            EnergyWinnerPosition) or ``energy_centroid`` (energy-weighted mean position;
            EnergyWeightedCentroidPosition).
        readout_discretize: the single's position is the centre of its crystal (GATE's
            ``DigitizerReadoutActor.discretize_volume`` = crystal), not the policy's position.
    """

    energy_resolution: float
    energy_reference_mev: float
    time_resolution_ps: float
    energy_window_kev: tuple[float, float]
    coincidence_window_ns: float
    multiples_policy: str
    delayed_window: bool
    delayed_offset_ns: float
    readout: str = "crystal"
    readout_policy: str = "energy_winner"
    readout_discretize: bool = True

    @classmethod
    def from_config(cls, dig: Mapping) -> "Digitizer":
        """From the validated ``digitizer`` section."""
        lo, hi = dig["energy_window_kev"]
        return cls(
            energy_resolution=dig["energy_resolution"],
            energy_reference_mev=dig["energy_reference_mev"],
            time_resolution_ps=dig["time_resolution_ps"],
            energy_window_kev=(lo, hi),
            coincidence_window_ns=dig["coincidence_window_ns"],
            multiples_policy=dig["multiples_policy"],
            delayed_window=bool(dig["delayed_window"]),
            delayed_offset_ns=dig["delayed_offset_ns"],
            readout=dig["readout"],
            readout_policy=dig["readout_policy"],
            readout_discretize=bool(dig["readout_discretize"]),
        )

    @property
    def energy_window_mev(self) -> tuple[float, float]:
        """The energy window in MeV."""
        lo, hi = (v / 1000.0 for v in self.energy_window_kev)
        return lo, hi

    @property
    def time_sigma_ns(self) -> float:
        """Gaussian sigma of one single's time blur [ns]."""
        return self.time_resolution_ps * 1e-3 * FWHM_TO_SIGMA

    def energy_sigma(self, e_mev: np.ndarray | float) -> np.ndarray:
        """Energy resolution sigma (MeV): FWHM = resolution x sqrt(E_ref E)."""
        return self.energy_resolution * np.sqrt(self.energy_reference_mev * np.asarray(e_mev)) * FWHM_TO_SIGMA


@dataclass(frozen=True)
class Acquisition:
    """What is simulated and how (config sections ``phantom`` and ``simulation``).

    Attributes:
        activity_bq: source activity [Bq].
        acquisition_s: scan duration [s].
        positron_range: sample the positron range.
        chunk_decays: decays per fast-engine chunk.
        acollinearity_fwhm_deg: FWHM of the deviation from back-to-back emission [deg].
        max_scatter_orders: interactions followed per photon in the phantom.
        rayleigh: include Rayleigh scattering.
        gate_threads: Geant4 worker threads.
        beta_plus_fraction: fraction of decays that emit a positron (F-18: 0.9686; the rest is
            electron capture, which emits no annihilation photons). ``activity_bq`` stays the
            decay rate.
        lyso_activity_bq: 176Lu activity of the crystals [Bq] simulated as a background
            (``simulation.lyso_background``; :mod:`.lyso`); 0 for none.
    """

    activity_bq: float
    acquisition_s: float
    positron_range: bool
    chunk_decays: int
    acollinearity_fwhm_deg: float
    max_scatter_orders: int
    rayleigh: bool
    gate_threads: int
    beta_plus_fraction: float = 1.0
    lyso_activity_bq: float = 0.0

    @classmethod
    def from_config(cls, cfg: Mapping) -> "Acquisition":
        """From a validated config (sections ``phantom`` and ``simulation``)."""
        p, s = cfg["phantom"], cfg["simulation"]
        return cls(
            activity_bq=p["activity_bq"],
            acquisition_s=p["acquisition_s"],
            positron_range=bool(p["positron_range"]),
            chunk_decays=s["chunk_decays"],
            acollinearity_fwhm_deg=s["acollinearity_fwhm_deg"],
            max_scatter_orders=s["max_scatter_orders"],
            rayleigh=bool(s["rayleigh"]),
            gate_threads=s["gate_threads"],
            beta_plus_fraction=F18_BETA_PLUS_FRACTION if s["beta_plus_branching"] else 1.0,
            lyso_activity_bq=lyso_activity_bq(cfg),
        )

    @property
    def expected_decays(self) -> float:
        """Mean number of decays (activity x time)."""
        return self.activity_bq * self.acquisition_s
