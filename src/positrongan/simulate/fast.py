"""The built-in fast Monte Carlo engine: decays -> photon pairs -> phantom -> crystals -> singles.

Vectorised with numpy and streamed in chunks of ``simulation.chunk_decays`` decays, so memory
does not grow with the number of decays. One chunk:

1. decay times of a Poisson process of rate ``activity_bq`` (exponential gaps, so the stream
   is time-ordered across chunks) cut at ``acquisition_s``; positions uniform in the fluid;
   optional positron range (isotropic, gamma-distributed length, mean 0.6 mm: F-18 in water);
2. two 511 keV photons back to back, the second deviated by the acollinearity (each transverse
   component Gaussian with FWHM ``acollinearity_fwhm_deg``);
3. phantom transport by Woodcock (delta) tracking against the majorant of the tube's
   materials: free paths from the energy-dependent total cross sections, the process chosen
   by the partial cross sections (photoelectric absorbs, Compton from Klein-Nishina with the
   energy change, Rayleigh from the form-factor cross section), up to ``max_scatter_orders``
   scatters. Photons below ``E_cut`` (window low edge minus 5 sigma of the energy resolution)
   can never be accepted and are dropped;
4. detection: the photon crosses the bore to the crystal annulus (no gaps between crystals)
   and is tracked through LYSO (depth of interaction from mu(LYSO)): photoelectric deposits the
   rest, Compton deposits E - E' and the photon goes on, so Compton escape is modelled. The
   photon's hits are read out like GATE's readout with the energy-winner policy: the sum of the
   deposits, at the position (and crystal) of the largest one;
5. digitizer: Gaussian energy blur with FWHM ``energy_resolution`` x sqrt(E_ref E), Gaussian
   time blur (FWHM ``time_resolution_ps``, per single), energy window.

No pile-up and no dead time are modelled.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Iterator, Mapping

import numpy as np

from ..geometry.phantom import TubePhantom
from ..geometry.scanner import Scanner
from . import materials as mat

log = logging.getLogger(__name__)

C_MM_PER_NS = 299.792458
FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
POSITRON_RANGE_MEAN_MM = 0.6  # F-18 in water (Cal-Gonzalez et al. 2013: mean 0.57 mm)
MAX_CRYSTAL_INTERACTIONS = 6  # 30 instead changes the singles in the window by 1e-4 (measured)
PHOTON_MEV = 0.51099895


@dataclass
class Photons:
    """A batch of photons (arrays of equal length)."""

    pos: np.ndarray  # (n, 3) mm
    dir: np.ndarray  # (n, 3) unit
    energy: np.ndarray  # (n,) MeV
    path: np.ndarray  # (n,) mm travelled since the annihilation
    scatters: np.ndarray  # (n,) int16 phantom scatters
    alive: np.ndarray  # (n,) bool


class FastEngine:
    """The fast engine for one scan.

    Params:
        tube: the phantom of this scan.
        scanner: the scanner.
        phantom_cfg, digitizer_cfg, simulation_cfg: the config sections.
    """

    def __init__(
        self, tube: TubePhantom, scanner: Scanner, phantom_cfg: Mapping, digitizer_cfg: Mapping, simulation_cfg: Mapping
    ):
        self.tube = tube
        self.scanner = scanner
        self.pcfg = phantom_cfg
        self.dcfg = digitizer_cfg
        self.scfg = simulation_cfg
        self.table = mat.MaterialTable(tube.materials, rayleigh=simulation_cfg["rayleigh"])
        self.rayleigh = mat.RayleighSampler(tube.materials) if simulation_cfg["rayleigh"] else None
        self.crystal = mat.MaterialTable([scanner.crystal_material], rayleigh=False)
        lo_mev = digitizer_cfg["energy_window_kev"][0] / 1000.0
        self.e_cut = max(lo_mev - 5.0 * self.energy_sigma(lo_mev), mat.E_MIN_MEV)
        self.r_bound = tube.bounding_radius_mm
        self.h_bound = tube.length_mm / 2 + 1.0
        # Crystal-id -> GATE-like unique volume id string, looked up instead of formatted per single.
        ring, index = scanner.ring_and_index(np.arange(scanner.n_crystals))
        self.volume_ids = np.array([f"0_0_{r}_{i}" for r, i in zip(ring, index)], dtype="S")

    # ---- digitizer helpers ------------------------------------------------------------------

    def energy_sigma(self, e_mev: np.ndarray | float) -> np.ndarray:
        """Energy resolution sigma (MeV): FWHM = resolution x sqrt(E_ref E)."""
        res = self.dcfg["energy_resolution"]
        return res * np.sqrt(self.dcfg["energy_reference_mev"] * np.asarray(e_mev)) * FWHM_TO_SIGMA

    # ---- sources ------------------------------------------------------------------------------

    def decay_chunks(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """Yield decay times (ns) of the whole acquisition in time-ordered chunks.

        A Poisson process of rate A on [0, T] (exponential gaps), so the total is Poisson(A T)
        and the chunks come in time order (needed to stream the coincidence sorter).
        """
        rate_per_ns = self.pcfg["activity_bq"] * 1e-9
        t_end = self.pcfg["acquisition_s"] * 1e9
        chunk = self.scfg["chunk_decays"]
        t = 0.0
        while True:
            times = t + np.cumsum(rng.standard_exponential(chunk) / rate_per_ns)
            if times[-1] >= t_end:
                times = times[times < t_end]
                if times.size:
                    yield times
                return
            t = times[-1]
            yield times

    def emit(self, times: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Photons]:
        """Decay positions and the two annihilation photons of each decay.

        Returns:
            (decay positions (n, 3), photons (2n,): photon k and k + n belong to decay k).
        """
        n = times.size
        src = self.tube.sample_fluid(n, rng)
        ann = src
        if self.pcfg["positron_range"]:
            length = rng.gamma(2.0, POSITRON_RANGE_MEAN_MM / 2.0, n)
            ann = src + mat.isotropic(n, rng) * length[:, None]
        d1 = mat.isotropic(n, rng)
        sigma = math.radians(self.scfg["acollinearity_fwhm_deg"]) * FWHM_TO_SIGMA
        if sigma > 0:
            dev = np.hypot(rng.normal(0, sigma, n), rng.normal(0, sigma, n))
            d2 = mat.rotate_directions(-d1, np.cos(dev), rng)
        else:
            d2 = -d1
        pos = np.concatenate([ann, ann])
        return src, Photons(
            pos=pos,
            dir=np.concatenate([d1, d2]),
            energy=np.full(2 * n, PHOTON_MEV),
            path=np.zeros(2 * n),
            scatters=np.zeros(2 * n, np.int16),
            alive=np.ones(2 * n, bool),
        )

    # ---- phantom transport --------------------------------------------------------------------

    def transport_phantom(self, ph: Photons, rng: np.random.Generator) -> Photons:
        """Track photons through the tube (in place) until they leave its bounding cylinder.

        Woodcock tracking: flights are sampled with the majorant mu_max(E); at each end point
        the real material decides whether a real interaction happens (probability mu/mu_max).
        Returns the same object, with ``pos`` on the bounding cylinder for surviving photons.
        """
        max_orders = self.scfg["max_scatter_orders"]
        idx = np.flatnonzero(ph.alive)
        while idx.size:
            whole = idx.size == ph.alive.size  # first flight of a fresh batch: no gathers needed
            p, d, e = (ph.pos, ph.dir, ph.energy) if whole else (ph.pos[idx], ph.dir[idx], ph.energy[idx])
            dexit = _exit_cylinder(p, d, self.r_bound, self.h_bound)
            mumax = self.table.mu_max(e)
            s = rng.standard_exponential(idx.size) / mumax
            # Every photon moves by min(flight, distance to exit); those that reach the exit are done.
            step = np.minimum(s, dexit)
            p = p + d * step[:, None]
            if whole:
                ph.pos = p
                ph.path += step
            else:
                ph.pos[idx] = p
                ph.path[idx] += step
            stay = s < dexit
            idx, p, d, e, mumax = idx[stay], p[stay], d[stay], e[stay], mumax[stay]
            m = self.tube.classify(p[:, 0], p[:, 1], p[:, 2])
            mu_pe, mu_c, mu_r = self.table.partials(m, e)
            r = rng.random(idx.size) * mumax
            photo = r < mu_pe
            compton = (r >= mu_pe) & (r < mu_pe + mu_c)
            rayl = (r >= mu_pe + mu_c) & (r < mu_pe + mu_c + mu_r)
            scat = compton | rayl
            # A photon about to scatter beyond the followed orders is dropped (counted as lost).
            over = scat & (ph.scatters[idx] >= max_orders)
            ph.alive[idx[photo | over]] = False
            compton &= ~over
            rayl &= ~over
            if compton.any():
                ic = idx[compton]
                cos_t, e_new = mat.sample_klein_nishina(e[compton], rng)
                ph.dir[ic] = mat.rotate_directions(d[compton], cos_t, rng)
                ph.energy[ic] = e_new
                ph.scatters[ic] += 1
            if rayl.any():
                ir = idx[rayl]
                cos_t = self.rayleigh.sample(m[rayl], e[rayl], rng)
                ph.dir[ir] = mat.rotate_directions(d[rayl], cos_t, rng)
                ph.scatters[ir] += 1
            ph.alive[idx[ph.energy[idx] < self.e_cut]] = False
            idx = idx[ph.alive[idx]]
        return ph

    # ---- detection ----------------------------------------------------------------------------

    def detect(self, ph: Photons, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Carry photons from the phantom to the crystal annulus and track them in the crystals.

        Returns:
            dict for photons that deposited energy: ``photon`` (index into the batch),
            ``edep`` (MeV, summed), ``pos`` (n, 3) of the largest deposit, ``path`` (mm from the
            annihilation to that deposit), ``crystal`` (CrystalID).
        """
        sc = self.scanner
        r_in, r_out, half = sc.inner_radius_mm, sc.outer_radius_mm, sc.axial_length_mm / 2
        # Entry into the crystal annulus, computed for the whole batch at once (cheaper than
        # gathering the live photons first), then one compaction to the photons that enter.
        t_in = _cylinder_from_inside(ph.pos, ph.dir, r_in)
        with np.errstate(invalid="ignore"):
            z_in = ph.pos[:, 2] + t_in * ph.dir[:, 2]
        idx = np.flatnonzero(ph.alive & np.isfinite(t_in) & (np.abs(z_in) < half))
        t_in = t_in[idx]
        d = ph.dir[idx]
        pos = ph.pos[idx] + d * t_in[:, None]
        path = ph.path[idx] + t_in
        e = ph.energy[idx]
        n = idx.size
        edep = np.zeros(n)
        best = np.zeros(n)
        best_pos = np.zeros((n, 3))
        best_path = np.zeros(n)
        # The state of the photons still in flight is kept compacted; only results are scattered.
        act = np.arange(n)
        for _ in range(MAX_CRYSTAL_INTERACTIONS):
            if not act.size:
                break
            dout = _leave_annulus(pos, d, r_in, r_out, half)
            mu_pe, mu_c = self.crystal.photo_compton(e)
            mu = mu_pe + mu_c
            s = rng.standard_exponential(act.size) / mu
            inside = s < dout
            if not inside.all():
                act, pos, d, e, path, s, mu_pe, mu = (x[inside] for x in (act, pos, d, e, path, s, mu_pe, mu))
            pos = pos + d * s[:, None]
            path = path + s
            photo = rng.random(act.size) * mu < mu_pe
            dep = np.where(photo, e, 0.0)
            comp = ~photo
            cos_t, e_new = mat.sample_klein_nishina(e[comp], rng)
            dep[comp] = e[comp] - e_new
            edep[act] += dep
            win = dep > best[act]
            wa = act[win]
            best[wa] = dep[win]
            best_pos[wa] = pos[win]
            best_path[wa] = path[win]
            act, pos, path = act[comp], pos[comp], path[comp]
            d = mat.rotate_directions(d[comp], cos_t, rng)
            e = e_new
        got = edep > 0
        # Positions are stored as float32: locate the crystal from the stored values, so the
        # file's CrystalID and PostPosition always agree.
        hit_pos = best_pos[got].astype(np.float32)
        crystal = sc.locate(hit_pos[:, 0], hit_pos[:, 1], hit_pos[:, 2])
        # A largest deposit just past an axial end face (rounding) is clipped to the last ring.
        ok = crystal >= 0
        return {
            "photon": idx[got][ok],
            "edep": edep[got][ok],
            "pos": hit_pos[ok],
            "path": best_path[got][ok],
            "crystal": crystal[ok].astype(np.int32),
        }

    # ---- one chunk ---------------------------------------------------------------------------

    def simulate_chunk(self, times: np.ndarray, first_event: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Simulate the decays at ``times`` and return the singles that pass the digitizer.

        Params:
            times: decay times (ns), sorted.
            first_event: EventID of the first decay of the chunk.
            rng: the scan's Generator.
        Returns:
            Singles columns (GATE branch names + truth), not yet time-sorted.
        """
        n = times.size
        src, ph = self.emit(times, rng)
        self.transport_phantom(ph, rng)
        det = self.detect(ph, rng)
        k = det["photon"]
        decay = k % n
        e_blur = det["edep"] + rng.standard_normal(k.size) * self.energy_sigma(det["edep"])
        t_sigma = self.dcfg["time_resolution_ps"] * 1e-3 * FWHM_TO_SIGMA
        t = times[decay] + det["path"] / C_MM_PER_NS + rng.standard_normal(k.size) * t_sigma
        lo, hi = (v / 1000.0 for v in self.dcfg["energy_window_kev"])
        keep = (e_blur >= lo) & (e_blur <= hi)
        cid = det["crystal"][keep]
        return {
            "EventID": (first_event + decay[keep]).astype(np.int64),
            "GlobalTime": t[keep],
            "TotalEnergyDeposit": e_blur[keep],
            "PostPosition_X": det["pos"][keep, 0],
            "PostPosition_Y": det["pos"][keep, 1],
            "PostPosition_Z": det["pos"][keep, 2],
            "PreStepUniqueVolumeID": self.volume_ids[cid],
            "CrystalID": cid,
            "PhantomScatters": ph.scatters[k[keep]],
            "SourcePosition_X": src[decay[keep], 0].astype(np.float32),
            "SourcePosition_Y": src[decay[keep], 1].astype(np.float32),
            "SourcePosition_Z": src[decay[keep], 2].astype(np.float32),
        }


# ---- ray geometry (vectorised) ------------------------------------------------------------------


def _exit_cylinder(p: np.ndarray, d: np.ndarray, radius: float, half: float) -> np.ndarray:
    """Distance along d from p (inside) to the surface of the z-cylinder |xy| <= radius, |z| <= half."""
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = p[:, 0] * d[:, 0] + p[:, 1] * d[:, 1]
    c = p[:, 0] ** 2 + p[:, 1] ** 2 - radius * radius
    with np.errstate(divide="ignore", invalid="ignore"):
        t_side = np.where(a > 1e-15, (-b + np.sqrt(np.maximum(b * b - a * c, 0.0))) / a, np.inf)
        t_z = np.where(
            d[:, 2] > 0, (half - p[:, 2]) / d[:, 2], np.where(d[:, 2] < 0, (-half - p[:, 2]) / d[:, 2], np.inf)
        )
    return np.maximum(np.minimum(t_side, t_z), 0.0)


def _cylinder_from_inside(p: np.ndarray, d: np.ndarray, radius: float) -> np.ndarray:
    """Distance along d from p (inside the infinite cylinder) to its side; inf when d is along z."""
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = p[:, 0] * d[:, 0] + p[:, 1] * d[:, 1]
    c = p[:, 0] ** 2 + p[:, 1] ** 2 - radius * radius
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(a > 1e-15, (-b + np.sqrt(np.maximum(b * b - a * c, 0.0))) / a, np.inf)


def _leave_annulus(p: np.ndarray, d: np.ndarray, r_in: float, r_out: float, half: float) -> np.ndarray:
    """Distance along d from p (in the crystal annulus) to where it leaves the annulus."""
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = p[:, 0] * d[:, 0] + p[:, 1] * d[:, 1]
    rr = p[:, 0] ** 2 + p[:, 1] ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        t_out = np.where(a > 1e-15, (-b + np.sqrt(np.maximum(b * b - a * (rr - r_out * r_out), 0.0))) / a, np.inf)
        disc = b * b - a * (rr - r_in * r_in)
        # Heading inwards (b < 0) and the line meets the inner cylinder: leaves into the bore.
        t_inner = np.where((b < 0) & (disc > 0) & (a > 1e-15), (-b - np.sqrt(np.maximum(disc, 0.0))) / a, np.inf)
        t_z = np.where(
            d[:, 2] > 0, (half - p[:, 2]) / d[:, 2], np.where(d[:, 2] < 0, (-half - p[:, 2]) / d[:, 2], np.inf)
        )
    return np.maximum(np.minimum(np.minimum(t_out, t_inner), t_z), 0.0)
