"""The intrinsic 176Lu background of lutetium-based crystals (LYSO, LSO), for the fast engines.

Natural lutetium holds 2.599 % of 176Lu (atom fraction; CIAAW), a beta- emitter with a half-life of
3.76e10 y (ENSDF; as used by Alva-Sanchez et al., Sci. Rep. 2018, doi:10.1038/s41598-018-35684-x,
who also quote a mean beta energy of 182 keV). Its activity in a scanner is

    A = V rho w_Lu / M_Lu N_A theta ln 2 / T_1/2,

V the volume of the crystal boxes (:func:`.settings.crystal_box_mm`), rho and the composition those
of :data:`.materials.MATERIALS` (Lu mass fraction w_Lu from xraylib's compound parser), M_Lu the
standard atomic weight: 37.3 Bq/g for Lu1.8Y0.2SiO5 at 7.1 g/cm^3 (265 Bq/cm^3), about 1.0 MBq in
the default scanner's 3760 cm^3 (``simulation.lyso_bq_per_g`` replaces the computed value by a
measured one).

Decay scheme (the ENSDF evaluation of A = 176, NNDC): 99.66 % of the decays
feed the 6+ level of 176Hf at 596.8 keV, which de-excites by the cascade 306.8 -> 201.8 -> 88.3 keV
(E2 transitions) with gamma emission probabilities 93.6 %, 78.0 % and 14.5 % per decay; the rest of
each transition is internal conversion. Modelled here:

- every decay as the main branch (the 0.34 % branch to the 998 keV level is left out);
- the beta spectrum: 7- -> 6+ is first-forbidden non-unique; with xi = alpha Z / 2R ~ 15 far above
  the endpoint (2.2 m_e c^2) the xi approximation gives the allowed shape,
  N(T) ~ p W (T0 - T)^2 F0(Z=72, W), with the relativistic point-nucleus Fermi function
  F0 = 2 (1 + g) (2 p R)^(2 g - 2) e^(pi eta) |Gamma(g + i eta)|^2 / Gamma(2 g + 1)^2,
  g = sqrt(1 - (alpha Z)^2), eta = alpha Z W / p, R = 1.2 A^(1/3) fm, endpoint T0 = 597.3 keV
  (Q = 1194.1 keV minus the level). Its mean, 183.7 keV, is within 1 % of the tabulated 182 keV;
- the beta deposits all its energy where it is born (its range in LYSO is below 0.4 mm; the
  bremsstrahlung it radiates, about 1 %, is also counted there);
- a converted transition deposits its whole energy locally too (the conversion electron and the
  atomic relaxation that follows: Hf K x-rays of 55-63 keV travel about 0.3 mm in LYSO);
- each emitted gamma leaves in its own isotropic direction (the angular correlation of the cascade
  is neglected) and is tracked through the box crystals as the annihilation photons are
  (:func:`.fast.track_crystal_hits`: photoelectric, Compton, across the bore; the phantom is not
  in its way in this model, about as for the photons that cross the bore after a crystal scatter);
- all emissions at the decay time (the 88 keV level's ~1.4 ns lifetime is neglected).

The deposits of one decay are summed per crystal (:func:`.fast.crystal_readout`, the source's
readout), then blurred and windowed by the same digitizer: a decay gives a single in its own
crystal (beta + the absorbed gammas and conversions) and, when a gamma escapes and is absorbed in
another crystal, a second one in coincidence with the first -- a true coincidence of the
background (the 307 keV line reaches a 350 keV window through the energy blur).

Singles of background decays carry a negative ``EventID`` (-1, -2, ... in time order), which is how
the coincidence sorter (:mod:`positrongan.coincidences`) and the counts tell them from the source.
The decays are a Poisson process of their own, interleaved in time with the source's by
:func:`.fast.fast_chunks`, and drawn from their own random stream, so switching the background on
leaves the source's singles unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from scipy.integrate import quad
from scipy.special import loggamma

from ..geometry.scanner import Scanner
from . import materials as mat
from .crystals import BoxRing
from .fast import C_MM_PER_NS, poisson_times, readout_position, crystal_readout, track_crystal_hits
from .settings import Digitizer, crystal_box_mm

LU_Z = 71
LU_ATOMIC_WEIGHT = 174.9668  # g/mol, CIAAW standard atomic weight of lutetium
LU176_ABUNDANCE = 0.02599  # atom fraction of 176Lu in natural lutetium (CIAAW)
LU176_HALF_LIFE_S = 3.76e10 * 365.25 * 86400.0  # 3.76e10 y (ENSDF), Julian years
AVOGADRO = 6.02214076e23
# The beta branch to the 596.8 keV level of 176Hf (Z = 72).
DAUGHTER_Z = 72
MASS_NUMBER = 176
BETA_ENDPOINT_MEV = 1.1941 - 0.5968
# The cascade from that level: transition energies (MeV) and gamma emission probabilities per decay.
GAMMA_MEV = np.array([0.30678, 0.20183, 0.08834])
GAMMA_EMISSION = np.array([0.936, 0.780, 0.145])
FINE_STRUCTURE = 1.0 / 137.035999084
HBAR_C_OVER_MEC2_FM = 386.15926796  # reduced Compton wavelength of the electron (fm)
LU_MATERIALS = ("LYSO", "LSO")  # the crystals of :data:`.materials.MATERIALS` that hold lutetium
BETA_TABLE_POINTS = 4097


def lutetium_mass_fraction(material: str) -> float:
    """Mass fraction of lutetium in a crystal material of :data:`.materials.MATERIALS` (0 if none)."""
    import xraylib

    formula, _ = mat.MATERIALS[material]
    comp = xraylib.CompoundParser(formula)
    for z, w in zip(comp["Elements"], comp["massFractions"]):
        if z == LU_Z:
            return float(w)
    return 0.0


def specific_activity_bq_per_g(material: str) -> float:
    """176Lu activity per gram of ``material`` [Bq/g] from its lutetium content."""
    atoms_176 = lutetium_mass_fraction(material) / LU_ATOMIC_WEIGHT * AVOGADRO * LU176_ABUNDANCE
    return atoms_176 * math.log(2.0) / LU176_HALF_LIFE_S


def crystal_volume_cm3(scanner: Scanner) -> float:
    """Total volume of the scanner's box crystals [cm^3] (the boxes both engines build)."""
    depth, width, axial = crystal_box_mm(scanner)
    return scanner.n_crystals * depth * width * axial / 1000.0


def background_activity_bq(scanner: Scanner, bq_per_g: float | None = None) -> float:
    """176Lu activity of the scanner's crystals [Bq]: crystal volume x density x specific activity
    (``bq_per_g``, or the value computed from the material's lutetium content when None)."""
    _, density = mat.MATERIALS[scanner.crystal_material]
    a = specific_activity_bq_per_g(scanner.crystal_material) if bq_per_g is None else bq_per_g
    return crystal_volume_cm3(scanner) * density * a


def beta_spectrum(t_mev: np.ndarray) -> np.ndarray:
    """Unnormalised beta spectrum N(T) of the main 176Lu branch (allowed shape x F0, module docstring)
    at kinetic energies ``t_mev``; 0 outside (0, endpoint)."""
    t = np.asarray(t_mev, dtype=np.float64)
    inside = (t > 0) & (t < BETA_ENDPOINT_MEV)
    tt = np.where(inside, t, 0.5 * BETA_ENDPOINT_MEV)
    me = mat.ELECTRON_MASS_MEV
    w = 1.0 + tt / me
    p = np.sqrt(w * w - 1.0)
    az = FINE_STRUCTURE * DAUGHTER_Z
    g = math.sqrt(1.0 - az * az)
    eta = az * w / p
    radius = 1.2 * MASS_NUMBER ** (1.0 / 3.0) / HBAR_C_OVER_MEC2_FM
    log_f0 = (
        math.log(2.0 * (1.0 + g))
        + (2.0 * g - 2.0) * np.log(2.0 * p * radius)
        + math.pi * eta
        + 2.0 * loggamma(g + 1j * eta).real
        - 2.0 * float(loggamma(2.0 * g + 1.0).real)
    )
    n = p * w * (BETA_ENDPOINT_MEV - tt) ** 2 * np.exp(log_f0)
    return np.where(inside, n, 0.0)


class BetaSampler:
    """Inverse-CDF sampling of :func:`beta_spectrum` from a fine table (trapezoid CDF on
    :data:`BETA_TABLE_POINTS` energies, linear between them)."""

    def __init__(self, points: int = BETA_TABLE_POINTS):
        self.energies = np.linspace(0.0, BETA_ENDPOINT_MEV, points)
        pdf = beta_spectrum(self.energies)
        cdf = np.concatenate([[0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(self.energies))])
        self.cdf = cdf / cdf[-1]
        # The density's normalisation by adaptive quadrature (the table's trapezoids are 1e-4 off).
        self.norm = quad(lambda t: float(beta_spectrum(t)), 0.0, BETA_ENDPOINT_MEV, limit=200)[0]

    def pdf(self, t_mev: np.ndarray) -> np.ndarray:
        """The normalised spectrum [1/MeV]."""
        return beta_spectrum(t_mev) / self.norm

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` kinetic energies [MeV]."""
        return np.interp(rng.random(n), self.cdf, self.energies)


def local_conversion_mev(emitted: np.ndarray) -> np.ndarray:
    """Energy [MeV] the converted transitions of each decay deposit where it happens (the whole
    transition energy: conversion electron plus atomic relaxation), from the (3, n) emission flags."""
    return (GAMMA_MEV[:, None] * ~emitted).sum(axis=0)


@dataclass
class BackgroundCount:
    """What a scan's counts report of its background (an engine's ``background`` attribute)."""

    activity_bq: float
    decays: int | None = None  # None: the engine draws the number itself (GATE)


class LysoBackground:
    """The 176Lu decays of the scanner's crystals during one scan, simulated in chunks.

    Params:
        scanner: the scanner (box crystals, material).
        digitizer: the digitizer (readout policy, blurs, window); readout must be ``crystal``.
        activity_bq: total 176Lu activity of the crystals [Bq] (:func:`background_activity_bq`).
        acquisition_s: scan duration [s].
        chunk_decays: decays per chunk.
        energy_dtype: dtype of ``TotalEnergyDeposit`` (the engine's, so chunks concatenate).
        volume_ids: CrystalID -> ``PreStepUniqueVolumeID`` of the engine, or None when the engine
            writes no such column.
    """

    def __init__(
        self,
        scanner: Scanner,
        digitizer: Digitizer,
        activity_bq: float,
        acquisition_s: float,
        chunk_decays: int,
        energy_dtype=np.float64,
        volume_ids: np.ndarray | None = None,
    ):
        if digitizer.readout != "crystal":
            raise ValueError(
                "config key 'simulation.lyso_background' needs 'digitizer.readout' = 'crystal' "
                f"(got {digitizer.readout!r}): the background decays inside the box crystals"
            )
        self.scanner = scanner
        self.digitizer = digitizer
        self.activity_bq = float(activity_bq)
        self.acquisition_s = float(acquisition_s)
        self.chunk_decays = int(chunk_decays)
        self.energy_dtype = energy_dtype
        self.volume_ids = volume_ids
        self.boxes = BoxRing.from_scanner(scanner)
        self.crystal = mat.MaterialTable([scanner.crystal_material], rayleigh=False)
        self.beta = BetaSampler()
        self.decays = 0

    @property
    def expected_decays(self) -> float:
        """Mean number of background decays in the scan."""
        return self.activity_bq * self.acquisition_s

    def decay_chunks(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """Decay times (ns) of the whole scan in time-ordered chunks (a Poisson process)."""
        return poisson_times(self.activity_bq, self.acquisition_s, self.chunk_decays, rng)

    def sample_positions(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` decay points uniform in the union of the box crystals (all of equal volume).

        Returns:
            (CrystalID (n,), positions (3, n) in mm).
        """
        g = self.boxes
        cid = rng.integers(0, self.scanner.n_crystals, n)
        index = cid % g.n
        ring = cid // g.n
        radial = g.r_in + g.depth * rng.random(n)
        tangential = (2.0 * rng.random(n) - 1.0) * g.half_w
        axial = (2.0 * rng.random(n) - 1.0) * g.half_h
        phi = 2.0 * np.pi * index / g.n
        c, s = np.cos(phi), np.sin(phi)
        pos = np.stack(
            [radial * c - tangential * s, radial * s + tangential * c, (ring - (g.rings - 1) / 2) * g.pitch + axial]
        )
        return cid, pos

    def sample_decays(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """``n`` decays: (CrystalID (n,), position (3, n) mm, beta kinetic energy (n,) MeV, which of
        the three cascade transitions emit a gamma (3, n) bool; the others convert)."""
        cid, src = self.sample_positions(n, rng)
        beta = self.beta.sample(n, rng)
        emitted = rng.random((GAMMA_MEV.size, n)) < GAMMA_EMISSION[:, None]
        return cid, src, beta, emitted

    def simulate_chunk(self, times: np.ndarray, first: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Simulate the background decays at ``times`` (ns); return the singles that pass the digitizer.

        Params:
            times: decay times (ns), sorted.
            first: number of background decays before this chunk (EventID = -(first + k + 1)).
            rng: the background's Generator.
        Returns:
            Singles columns of the engines' schema, not yet time-sorted.
        """
        n = times.size
        cid, src, beta, emitted = self.sample_decays(n, rng)
        local = beta + local_conversion_mev(emitted)
        line, decay_of = np.nonzero(emitted)
        m = line.size
        st = np.empty((10, m))
        st[0:3] = src[:, decay_of]
        st[3:6] = mat.isotropic_uvw(m, rng)
        st[6] = GAMMA_MEV[line]
        st[7] = 0.0
        st[8] = 0.0
        st[9] = np.arange(m)
        hits = track_crystal_hits(self.boxes, self.crystal, st, rng)
        if hits is None:
            h_decay, h_cry, h_dep, h_pos, h_path = (
                (np.zeros(0, np.int64),) * 2
                + (np.zeros(0),)
                + (
                    np.zeros((3, 0)),
                    np.zeros(0),
                )
            )
        else:
            h_row, h_cry, h_dep, h_pos, h_path = hits
            h_decay = decay_of[h_row]
        # The local deposit of every decay is one more hit in its own crystal, at path 0.
        h_decay = np.concatenate([np.arange(n), h_decay])
        h_cry = np.concatenate([cid, h_cry])
        h_dep = np.concatenate([local, h_dep])
        h_pos = np.concatenate([src, h_pos], axis=1)
        h_path = np.concatenate([np.zeros(n), h_path])
        win, edep, pos, path, crystal = crystal_readout(
            h_decay, h_cry, h_dep, h_pos, h_path, self.scanner.n_crystals, self.digitizer.readout_policy
        )
        decay = h_decay[win]
        dig = self.digitizer
        e_blur = edep + rng.standard_normal(edep.size) * dig.energy_sigma(edep)
        t = times.take(decay) + path / C_MM_PER_NS + rng.standard_normal(edep.size) * dig.time_sigma_ns
        lo, hi = dig.energy_window_mev
        keep = np.flatnonzero((e_blur >= lo) & (e_blur <= hi))
        crystal = crystal.take(keep)
        dk = decay.take(keep)
        p = readout_position(self.scanner, dig, crystal, pos[:, keep])
        sp = src[:, dk].astype(np.float32)
        self.decays += n
        out = {
            "EventID": -(first + dk + 1),
            "GlobalTime": t.take(keep),
            "TotalEnergyDeposit": e_blur.take(keep).astype(self.energy_dtype),
            "PostPosition_X": p[0],
            "PostPosition_Y": p[1],
            "PostPosition_Z": p[2],
        }
        if self.volume_ids is not None:
            out["PreStepUniqueVolumeID"] = self.volume_ids.take(crystal)
        out.update(
            {
                "CrystalID": crystal.astype(np.int32),
                "PhantomScatters": np.zeros(keep.size, np.int16),
                "SourcePosition_X": sp[0],
                "SourcePosition_Y": sp[1],
                "SourcePosition_Z": sp[2],
            }
        )
        return out
