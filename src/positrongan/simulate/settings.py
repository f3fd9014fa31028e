"""Typed, validated settings of a scan's simulation, built once from the config and handed to the
engines (which then never read raw config sections): the digitizer and the acquisition."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


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
    """

    energy_resolution: float
    energy_reference_mev: float
    time_resolution_ps: float
    energy_window_kev: tuple[float, float]
    coincidence_window_ns: float
    multiples_policy: str
    delayed_window: bool
    delayed_offset_ns: float

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
    """

    activity_bq: float
    acquisition_s: float
    positron_range: bool
    chunk_decays: int
    acollinearity_fwhm_deg: float
    max_scatter_orders: int
    rayleigh: bool
    gate_threads: int

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
        )

    @property
    def expected_decays(self) -> float:
        """Mean number of decays (activity x time)."""
        return self.activity_bq * self.acquisition_s
