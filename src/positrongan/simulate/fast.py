"""The built-in fast Monte Carlo engine: decays -> photon pairs -> phantom -> crystals -> singles.

Vectorised with numpy and streamed in chunks of ``simulation.chunk_decays`` decays, so memory
does not grow with the number of decays. One chunk:

1. decay times of a Poisson process of rate ``activity_bq`` (exponential gaps, so the stream
   is time-ordered across chunks) cut at ``acquisition_s``; positions uniform in the fluid; only
   96.86 % of the decays emit a positron (F-18's beta+ branching; ``simulation.beta_plus_branching``);
   the positron range (``phantom.positron_range``, :mod:`.positron`: Levin & Hoffman's F-18 kernel,
   scaled by the density of each material on the way, so positrons that reach the wall stop there);
2. two 511 keV photons back to back, the second deviated by the acollinearity (each transverse
   component Gaussian with FWHM ``acollinearity_fwhm_deg``);
3. phantom transport by Woodcock (delta) tracking against the majorant of the tube's
   materials: free paths from the energy-dependent total cross sections, the process chosen
   by the partial cross sections (photoelectric absorbs, Compton from Klein-Nishina with the
   energy change, Rayleigh from the form-factor cross section), up to ``max_scatter_orders``
   scatters. Photons below ``E_cut`` (window low edge minus 5 sigma of the energy resolution)
   can never be accepted and are dropped;
4. detection, with the readout of ``digitizer.readout``:
   ``crystal`` (default, as the GATE scene): the photon is tracked through the box crystals of
   :mod:`.crystals` (the GATE scene's boxes, with the wedge gaps between them; photoelectric
   deposits the rest, Compton deposits E - E' and the photon goes on, into a neighbour or across
   the bore), and the deposits of one decay are summed per crystal as GATE's readout does with
   ``group_volume`` = crystal: energy = sum, time = the earliest deposit, position = the largest
   deposit (``energy_winner``) or the energy-weighted centroid (``energy_centroid``), moved to the
   crystal centre with ``readout_discretize`` (GATE's ``discretize_volume``);
   ``annulus`` (the former model): a gapless LYSO annulus, each photon's deposits summed and
   located in the crystal at the policy's position;
5. digitizer: Gaussian energy blur with FWHM ``energy_resolution`` x sqrt(E_ref E), Gaussian
   time blur (FWHM ``time_resolution_ps``, per single), energy window.

No pile-up and no dead time are modelled.

With ``simulation.lyso_background``, the crystals' own 176Lu decays (:mod:`.lyso`) are simulated
too, interleaved in time with the source's (:func:`fast_chunks`); both kernels share that code.

This numpy implementation is the reference (``simulation.kernel: numpy``, :data:`NumpyEngine`);
the default, :class:`.fast_numba.NumbaEngine`, compiles the same physics with numba and is
tested against it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..geometry.phantom import TubePhantom
from ..geometry.scanner import Scanner
from . import materials as mat
from . import positron
from .crystals import EPS_MM, BoxRing, box_interval, next_box
from .settings import FWHM_TO_SIGMA, Acquisition, Digitizer

log = logging.getLogger(__name__)

C_MM_PER_NS = 299.792458
MAX_CRYSTAL_INTERACTIONS = 6  # per photon; 30 instead changes the singles in the window by 1e-4 (measured)
MAX_CRYSTAL_STEPS = 400  # interactions + crystal changes of the photons still in flight (vectorised loop)
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


def _state_of_alive(ph: Photons) -> np.ndarray:
    """The live photons as the engine's (10, n) state array, one row per component: position
    (0-2), direction (3-5), energy, path, scatters, and the photon's index in ``ph`` (9)."""
    idx = np.flatnonzero(ph.alive)
    st = np.empty((10, idx.size))
    st[0:3] = ph.pos.take(idx, axis=0).T
    st[3:6] = ph.dir.take(idx, axis=0).T
    st[6] = ph.energy.take(idx)
    st[7] = ph.path.take(idx)
    st[8] = ph.scatters.take(idx)
    st[9] = idx
    return st


class FastEngine:
    """The fast engine for one scan.

    Params:
        tube: the phantom of this scan.
        scanner: the scanner.
        digitizer: the digitizer settings.
        acquisition: activity, duration and transport settings.
    """

    # The engine knows each photon's phantom interactions: trues and scatters are separable.
    separates_scatter = True

    def __init__(self, tube: TubePhantom, scanner: Scanner, digitizer: Digitizer, acquisition: Acquisition):
        self.tube = tube
        self.scanner = scanner
        self.digitizer = digitizer
        self.acq = acquisition
        self.table = mat.MaterialTable(tube.materials, rayleigh=acquisition.rayleigh)
        self.rayleigh = mat.RayleighSampler(tube.materials) if acquisition.rayleigh else None
        self.crystal = mat.MaterialTable([scanner.crystal_material], rayleigh=False)
        lo_mev = digitizer.energy_window_kev[0] / 1000.0
        self.e_cut = max(lo_mev - 5.0 * self.energy_sigma(lo_mev), mat.E_MIN_MEV)
        self.r_bound = tube.bounding_radius_mm
        self.h_bound = tube.length_mm / 2 + 1.0
        self.boxes = BoxRing.from_scanner(scanner)
        self.density = positron.relative_densities(tube.materials)
        # Crystal-id -> GATE-like unique volume id string, looked up instead of formatted per single.
        ring, index = scanner.ring_and_index(np.arange(scanner.n_crystals))
        self.volume_ids = np.array([f"0_0_{r}_{i}" for r, i in zip(ring, index)], dtype="S")
        self.background = make_background(scanner, digitizer, acquisition, np.float64, self.volume_ids)

    # ---- digitizer helpers ------------------------------------------------------------------

    def energy_sigma(self, e_mev: np.ndarray | float) -> np.ndarray:
        """Energy resolution sigma (MeV): FWHM = resolution x sqrt(E_ref E)."""
        return self.digitizer.energy_sigma(e_mev)

    # ---- the driver's interface ---------------------------------------------------------------

    def compile(self) -> None:
        """Nothing to compile (the interface of :class:`.fast_numba.NumbaEngine`)."""

    @property
    def expected_chunks(self) -> int:
        """Chunks a scan of the expected number of decays takes (for the progress bar), background included."""
        n = max(1, math.ceil(self.acq.expected_decays / self.acq.chunk_decays))
        if self.background is not None:
            n += math.ceil(self.background.expected_decays / self.acq.chunk_decays)
        return n

    def chunks(self, rng: np.random.Generator) -> Iterator[tuple[dict[str, np.ndarray], float, int]]:
        """The whole scan as chunks of singles, for :func:`.driver.run_engine`.

        Yields:
            (singles of the next chunk of decays, the time (ns) up to which every single of the
            scan has now been yielded, the number of decays in the chunk).
        """
        yield from fast_chunks(self, rng)

    # ---- sources ------------------------------------------------------------------------------

    def decay_chunks(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """Decay times (ns) of the whole acquisition in time-ordered chunks (:func:`poisson_times`)."""
        return poisson_times(self.acq.activity_bq, self.acq.acquisition_s, self.acq.chunk_decays, rng)

    def emit(self, times: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Photons]:
        """Decay positions and the two annihilation photons of each decay.

        Returns:
            (decay positions (n, 3), photons (2n,): photon k and k + n belong to decay k).
        """
        src, st = self._emit(times, rng)
        m = st.shape[1]
        return src, Photons(
            pos=np.ascontiguousarray(st[0:3].T),
            dir=np.ascontiguousarray(st[3:6].T),
            energy=st[6].copy(),
            path=np.zeros(m),
            scatters=np.zeros(m, np.int16),
            alive=np.ones(m, bool),
        )

    def _emit(self, times: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`emit` with the photons as a state array (see :meth:`_transport`)."""
        n = times.size
        src = self.tube.sample_fluid(n, rng)
        ann = src
        if self.acq.positron_range:
            ann = positron.annihilation_points(src, self.tube, rng, self.density)
        st = np.empty((10, 2 * n))
        u1 = mat.isotropic_uvw(n, rng)
        sigma = math.radians(self.acq.acollinearity_fwhm_deg) * FWHM_TO_SIGMA
        st[3:6, :n] = u1
        if sigma > 0:
            dev = np.hypot(rng.normal(0, sigma, n), rng.normal(0, sigma, n))
            np.negative(u1, out=u1)
            st[3:6, n:] = mat.rotate_uvw(u1, np.cos(dev), rng)
        else:
            np.negative(u1, out=st[3:6, n:])
        st[0:3, :n] = ann.T
        st[0:3, n:] = st[0:3, :n]
        st[6] = PHOTON_MEV
        st[7] = 0.0
        st[8] = 0.0
        st[9] = np.arange(2 * n)
        return src, st

    # ---- phantom transport --------------------------------------------------------------------

    def transport_phantom(self, ph: Photons, rng: np.random.Generator) -> Photons:
        """Track photons through the tube (in place) until they leave its bounding cylinder.

        Woodcock tracking: flights are sampled with the majorant mu_max(E); at each end point
        the real material decides whether a real interaction happens (probability mu/mu_max).
        Returns the same object, with ``pos`` on the bounding cylinder for surviving photons.
        """
        st = _state_of_alive(ph)
        box = [st]
        del st
        out, dead = self._transport(box, rng)
        ph.alive[dead] = False
        k = out[9].astype(np.int64)
        ph.pos[k] = out[0:3].T
        ph.dir[k] = out[3:6].T
        ph.energy[k] = out[6]
        ph.path[k] = out[7]
        ph.scatters[k] = out[8]
        return ph

    def _transport(self, box: list[np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Phantom transport of photons held in a state array.

        The photons in flight are one (10, n) array stored by component (rows x, y, z, ux, uy,
        uz, E, path, scatters, photon index), compacted with one ``take`` per flight (much
        cheaper than masking each field). ``box`` holds that array and is emptied, so the
        caller keeps no reference to it (the first compaction can free it: lower peak memory).

        Returns:
            (the state (10, m) of the m photons that left the bounding cylinder, positioned on it,
            in the order they left; the photon indices of those lost in the phantom).
        """
        max_orders = self.acq.max_scatter_orders
        st = box.pop()
        # The photons that leave, in the order they leave, written into one preallocated block.
        out = np.empty_like(st)
        n_out = 0
        lost = []
        while st.shape[1]:
            dexit = _exit_cylinder_soa(st, self.r_bound, self.h_bound)
            mumax = self.table.mu_max(st[6])
            s = rng.standard_exponential(st.shape[1])
            s /= mumax
            stay = s < dexit
            # Photons whose flight reaches the exit are done: record their state on the cylinder.
            j = np.flatnonzero(~stay)
            if j.size:
                ex = out[:, n_out : n_out + j.size]
                ex[...] = st.take(j, axis=1)
                n_out += j.size
                t = dexit.take(j)
                ex[0:3] += ex[3:6] * t
                ex[7] += t
                j = np.flatnonzero(stay)
                st, s, mumax = st.take(j, axis=1), s.take(j), mumax.take(j)
            if not st.shape[1]:
                break
            st[0:3] += st[3:6] * s
            st[7] += s
            m = self.tube.classify(st[0], st[1], st[2])
            c_pe, c_pc, c_tot = self.table.cumulative(m, st[6])
            r = rng.random(st.shape[1])
            r *= mumax
            photo = r < c_pe
            compton = (r >= c_pe) & (r < c_pc)
            rayl = (r >= c_pc) & (r < c_tot)
            # A photon about to scatter beyond the followed orders is dropped (counted as lost).
            over = (compton | rayl) & (st[8] >= max_orders)
            dead = photo | over
            compton &= ~over
            rayl &= ~over
            jc = np.flatnonzero(compton)
            if jc.size:
                cos_t, e_new = mat.sample_klein_nishina(st[6].take(jc), rng)
                st[3:6, jc] = mat.rotate_uvw(st[3:6].take(jc, axis=1), cos_t, rng)
                st[6, jc] = e_new
                st[8, jc] += 1
                dead[jc] |= e_new < self.e_cut
            jr = np.flatnonzero(rayl)
            if jr.size:
                cos_t = self.rayleigh.sample(m.take(jr), st[6].take(jr), rng)
                st[3:6, jr] = mat.rotate_uvw(st[3:6].take(jr, axis=1), cos_t, rng)
                st[8, jr] += 1
            jd = np.flatnonzero(dead)
            if jd.size:
                lost.append(st[9].take(jd))
                st = st.take(np.flatnonzero(~dead), axis=1)
        out = out[:, :n_out]
        lost = np.concatenate(lost).astype(np.int64) if lost else np.empty(0, np.int64)
        return out, lost

    # ---- detection ----------------------------------------------------------------------------

    def _detect(self, ph_st: np.ndarray, rng: np.random.Generator, n_decays: int) -> dict[str, np.ndarray]:
        """Detection and readout of the photons in a state array (see :meth:`_transport`).

        Returns:
            One entry per single: ``row`` (the photon, in ``ph_st``, of its largest deposit),
            ``edep`` (MeV, summed), ``pos`` (n, 3) float32, ``path`` (mm from the annihilation to the
            single's time stamp), ``crystal``.
        """
        if self.digitizer.readout == "crystal":
            return self._detect_crystal(ph_st, rng, n_decays)
        return self._detect_annulus(ph_st, rng)

    def _readout_position(self, crystal: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """(3, n) float32 positions of the singles: the crystal centres with ``readout_discretize``."""
        return readout_position(self.scanner, self.digitizer, crystal, pos)

    def _detect_crystal(self, ph_st: np.ndarray, rng: np.random.Generator, n_decays: int) -> dict[str, np.ndarray]:
        """Per-crystal readout in box crystals (GATE's readout, group volume = crystal).

        Each photon is tracked through the boxes (:func:`track_crystal_hits`); the deposits of one
        decay are then summed per crystal (:func:`crystal_readout`): energy = sum, time = earliest
        deposit, position = the policy's (largest deposit or energy-weighted centroid).
        """
        hits = track_crystal_hits(self.boxes, self.crystal, ph_st, rng)
        if hits is None:
            z = np.zeros(0)
            return {
                "row": np.zeros(0, np.int64),
                "edep": z,
                "pos": np.zeros((0, 3), np.float32),
                "path": z,
                "crystal": np.zeros(0, np.int32),
            }
        h_row, h_cry, h_dep, h_pos, h_path = hits
        decay = ph_st[9].take(h_row).astype(np.int64) % n_decays
        win, edep, pos, first_path, cid = crystal_readout(
            decay, h_cry, h_dep, h_pos, h_path, self.scanner.n_crystals, self.digitizer.readout_policy
        )
        return {
            "row": h_row[win],
            "edep": edep,
            "pos": self._readout_position(cid, pos).T,
            "path": first_path,
            "crystal": cid.astype(np.int32),
        }

    def _detect_annulus(self, ph_st: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Readout of a gapless annulus: a photon's deposits summed, located at the policy's position."""
        sc = self.scanner
        r_in, r_out, half = sc.inner_radius_mm, sc.outer_radius_mm, sc.axial_length_mm / 2
        # Entry into the crystal annulus, then one compaction to the photons that enter.
        t_in, a = _side_distance_soa(ph_st, r_in)  # inf or nan when along z
        with np.errstate(invalid="ignore"):
            z_in = ph_st[2] + t_in * ph_st[5]
            ok = (a > 1e-15) & (np.abs(z_in) < half)
        idx = np.flatnonzero(ok)
        n = idx.size
        # State by component: x, y, z, ux, uy, uz, E, path, slot (index into the results), in
        # float32 from here on: the deposits are stored as float32 (1e-5 mm, 1e-7 MeV), the
        # path only sets the time of flight (1e-4 ps), and half the bytes make every pass cheaper.
        st = ph_st[0:9].take(idx, axis=1)
        t_in = t_in.take(idx)
        st[0:3] += st[3:6] * t_in
        st[7] += t_in
        st[8] = np.arange(n)
        st = st.astype(np.float32)
        edep = np.zeros(n)
        best = np.zeros(n)
        best_pos = np.zeros((3, n))
        best_path = np.zeros(n)
        centroid = self.digitizer.readout_policy == "energy_centroid"
        wpos = np.zeros((3, n)) if centroid else None
        # The state of the photons still in flight is kept compacted; only results are scattered.
        for _ in range(MAX_CRYSTAL_INTERACTIONS):
            if not st.shape[1]:
                break
            dout = _leave_annulus_soa(st, r_in, r_out, half)
            mu_pe, mu_c = self.crystal.photo_compton(st[6])
            mu = mu_pe + mu_c
            s = rng.standard_exponential(st.shape[1])
            s /= mu
            inside = s < dout
            if not inside.all():
                j = np.flatnonzero(inside)
                st, s, mu_pe, mu = st.take(j, axis=1), s.take(j), mu_pe.take(j), mu.take(j)
            st[0:3] += st[3:6] * s
            st[7] += s
            e = st[6]
            act = st[8].astype(np.int64)
            r = rng.random(st.shape[1])
            r *= mu
            photo = r < mu_pe
            comp = np.flatnonzero(~photo)
            dep = np.where(photo, e, np.float32(0.0))
            e_c = e.take(comp)
            cos_t, e_new = mat.sample_klein_nishina(e_c, rng)
            e_new = e_new.astype(np.float32)
            dep[comp] = e_c - e_new
            edep[act] += dep
            if centroid:
                for c in range(3):
                    np.add.at(wpos[c], act, dep * st[c])
            jw = np.flatnonzero(dep > best.take(act))
            wa = act.take(jw)
            best[wa] = dep.take(jw)
            best_pos[:, wa] = st[0:3].take(jw, axis=1)
            best_path[wa] = st[7].take(jw)
            st = st.take(comp, axis=1)
            st[6] = e_new
            st[3:6] = mat.rotate_uvw(st[3:6], cos_t, rng)
        got = np.flatnonzero(edep > 0)
        if centroid:
            best_pos = wpos / np.where(edep > 0, edep, 1.0)
        # Positions are stored as float32: locate the crystal from the stored values, so the
        # file's CrystalID and PostPosition always agree.
        hit_pos = best_pos.take(got, axis=1).astype(np.float32)
        crystal = sc.locate(hit_pos[0], hit_pos[1], hit_pos[2])
        # A largest deposit just past an axial end face (rounding) is clipped to the last ring.
        ok = crystal >= 0
        if not ok.all():
            got, hit_pos, crystal = got[ok], hit_pos[:, ok], crystal[ok]
        return {
            "row": idx.take(got),
            "edep": edep.take(got),
            "pos": self._readout_position(crystal, hit_pos).T,
            "path": best_path.take(got),
            "crystal": crystal.astype(np.int32),
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
        src, st = self._emit(times, rng)
        bp = self.acq.beta_plus_fraction
        if bp < 1.0:
            # Electron-capture decays emit no positron, hence no photons (their EventIDs are skipped).
            beta = rng.random(n) < bp
            st = st[:, np.concatenate([beta, beta])]
        box = [st]
        del st
        out, _ = self._transport(box, rng)
        det = self._detect(out, rng, n)
        row = det["row"]
        decay = out[9].take(row).astype(np.int64) % n
        edep = det["edep"]
        e_blur = edep + rng.standard_normal(row.size) * self.energy_sigma(edep)
        t_sigma = self.digitizer.time_sigma_ns
        t = times.take(decay) + det["path"] / C_MM_PER_NS + rng.standard_normal(row.size) * t_sigma
        lo, hi = self.digitizer.energy_window_mev
        keep = np.flatnonzero((e_blur >= lo) & (e_blur <= hi))
        cid = det["crystal"].take(keep)
        dk = decay.take(keep)
        pos = det["pos"].take(keep, axis=0)
        sp = src.take(dk, axis=0).astype(np.float32)
        return {
            "EventID": first_event + dk,
            "GlobalTime": t.take(keep),
            "TotalEnergyDeposit": e_blur.take(keep),
            "PostPosition_X": pos[:, 0],
            "PostPosition_Y": pos[:, 1],
            "PostPosition_Z": pos[:, 2],
            "PreStepUniqueVolumeID": self.volume_ids.take(cid),
            "CrystalID": cid,
            "PhantomScatters": out[8].take(row.take(keep)).astype(np.int16),
            "SourcePosition_X": sp[:, 0],
            "SourcePosition_Y": sp[:, 1],
            "SourcePosition_Z": sp[:, 2],
        }


NumpyEngine = FastEngine  # the name ``simulation.kernel: numpy`` refers to


def poisson_times(rate_bq: float, duration_s: float, chunk: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Yield the event times (ns) of a Poisson process of rate ``rate_bq`` on [0, ``duration_s``] in
    time-ordered chunks of ``chunk`` events (the last one shorter).

    Exponential gaps, so the total is Poisson(rate x duration) and the chunks come in time order
    (needed to stream the coincidence sorter); memory stays flat whatever the total.
    """
    rate_per_ns = rate_bq * 1e-9
    t_end = duration_s * 1e9
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


def readout_position(scanner: Scanner, digitizer: Digitizer, crystal: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """(3, n) float32 positions of singles read out in ``crystal`` at ``pos`` (3, n): the crystal
    centres with ``readout_discretize`` (GATE's ``discretize_volume``), else ``pos``."""
    if digitizer.readout_discretize:
        return scanner.crystal_centre(crystal).T.astype(np.float32)
    return pos.astype(np.float32)


def _keep(j: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """The photons ``j`` of every per-photon array (along the last axis: (3, m) or (m,))."""
    return tuple(a[..., j] for a in arrays)


def track_crystal_hits(
    g: BoxRing, table: mat.MaterialTable, ph_st: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, ...] | None:
    """Track photons through the box crystals and return their deposits.

    Each photon of the state array ``ph_st`` (see :meth:`FastEngine._transport`; it may start
    anywhere, in the bore or inside a crystal) goes to the next box along its ray, interacts there
    by photoelectric absorption (deposits the rest) or Compton scattering (deposits E - E', goes on,
    into a neighbour or across the bore), at most MAX_CRYSTAL_INTERACTIONS times; nothing interacts
    in the air gaps.

    Params:
        g: the box crystals.
        table: the crystal material's cross sections (``MaterialTable([material], rayleigh=False)``).
        ph_st: (10, m) photon state.
        rng: the Generator.
    Returns:
        (row, crystal, deposit (MeV), position (3, k), path (mm)) of the k deposits, row being the
        photon's column in ``ph_st``; None when nothing was deposited.
    """
    m = ph_st.shape[1]
    p = ph_st[0:3].copy()
    u = ph_st[3:6].copy()
    e = ph_st[6].copy()
    path = ph_st[7].copy()
    row = np.arange(m)
    n_int = np.zeros(m, np.int64)
    crystal = np.full(m, -1, np.int64)
    dout = np.zeros(m)
    hits: list[tuple[np.ndarray, ...]] = []
    for _ in range(MAX_CRYSTAL_STEPS):
        if not row.size:
            break
        # Photons between crystals: to the next box along the ray (or gone).
        k = np.flatnonzero(crystal < 0)
        if k.size:
            t0, t1, cid = next_box(g, p[:, k], u[:, k])
            ok = cid >= 0
            kk = k[ok]
            p[:, kk] += u[:, kk] * t0[ok]
            path[kk] += t0[ok]
            dout[kk] = t1[ok] - t0[ok]
            crystal[kk] = cid[ok]
            live = np.ones(row.size, bool)
            live[k[~ok]] = False
            if not live.all():
                j = np.flatnonzero(live)
                p, u, e, path, row, n_int, crystal, dout = _keep(j, p, u, e, path, row, n_int, crystal, dout)
            if not row.size:
                break
        mu_pe, mu_c = table.photo_compton(e)
        mu = mu_pe + mu_c
        s = rng.standard_exponential(row.size) / mu
        leave = s >= dout
        # Leaving the box: move to its surface; the next pass finds the next box.
        jl = np.flatnonzero(leave)
        # Just past the surface: a convex box is never re-entered along the same ray.
        p[:, jl] += u[:, jl] * (dout[jl] + EPS_MM)
        path[jl] += dout[jl]
        crystal[jl] = -1
        ji = np.flatnonzero(~leave)
        si = s[ji]
        p[:, ji] += u[:, ji] * si
        path[ji] += si
        ei = e[ji]
        photo = rng.random(ji.size) * mu[ji] < mu_pe[ji]
        dep = ei.copy()
        jc = np.flatnonzero(~photo)
        cos_t, e_new = mat.sample_klein_nishina(ei[jc], rng)
        dep[jc] = ei[jc] - e_new
        hits.append((row[ji], crystal[ji], dep, p[:, ji].copy(), path[ji].copy()))
        comp = ji[jc]
        e[comp] = e_new
        u[:, comp] = mat.rotate_uvw(u[:, comp], cos_t, rng)
        n_int[ji] += 1
        if comp.size:
            _, t1 = box_interval(g, p[:, comp], u[:, comp], crystal[comp] % g.n, crystal[comp] // g.n)
            dout[comp] = np.maximum(t1, 0.0)
        dead = np.zeros(row.size, bool)
        dead[ji[photo]] = True
        dead |= n_int >= MAX_CRYSTAL_INTERACTIONS
        if dead.any():
            j = np.flatnonzero(~dead)
            p, u, e, path, row, n_int, crystal, dout = _keep(j, p, u, e, path, row, n_int, crystal, dout)
    if not hits:
        return None
    return (
        np.concatenate([h[0] for h in hits]),
        np.concatenate([h[1] for h in hits]),
        np.concatenate([h[2] for h in hits]),
        np.concatenate([h[3] for h in hits], axis=1),
        np.concatenate([h[4] for h in hits]),
    )


def crystal_readout(
    decay: np.ndarray,
    h_cry: np.ndarray,
    h_dep: np.ndarray,
    h_pos: np.ndarray,
    h_path: np.ndarray,
    n_crystals: int,
    policy: str,
) -> tuple[np.ndarray, ...]:
    """Sum deposits per (decay, crystal), as GATE's readout with ``group_volume`` = crystal.

    Params:
        decay, h_cry, h_dep, h_pos (3, k), h_path: the decay, crystal, energy (MeV), position and
            path (mm) of every deposit.
        n_crystals: number of crystals (the grouping key is decay x n_crystals + crystal).
        policy: ``energy_winner`` (position of the largest deposit) or ``energy_centroid``.
    Returns:
        (index of each group's largest deposit, summed energy, position (3, n), the smallest path
        (the earliest deposit), crystal), one entry per (decay, crystal) group.
    """
    key = decay * n_crystals + h_cry
    # Group by (decay, crystal), the largest deposit first in each group.
    order = np.lexsort((-h_dep, key))
    key = key[order]
    start = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    dep_o = h_dep[order]
    edep = np.add.reduceat(dep_o, start)
    first_path = np.minimum.reduceat(h_path[order], start)
    win = order[start]
    if policy == "energy_centroid":
        pos = np.stack([np.add.reduceat(h_pos[c][order] * dep_o, start) for c in range(3)]) / edep
    else:
        pos = h_pos[:, win]
    return win, edep, pos, first_path, h_cry[win]


def make_background(scanner: Scanner, digitizer: Digitizer, acquisition: Acquisition, energy_dtype, volume_ids):
    """The engine's 176Lu background (:class:`.lyso.LysoBackground`), or None when it is off."""
    if acquisition.lyso_activity_bq <= 0:
        return None
    from .lyso import LysoBackground

    return LysoBackground(
        scanner,
        digitizer,
        acquisition.lyso_activity_bq,
        acquisition.acquisition_s,
        acquisition.chunk_decays,
        energy_dtype=energy_dtype,
        volume_ids=volume_ids,
    )


def fast_chunks(engine, rng: np.random.Generator) -> Iterator[tuple[dict[str, np.ndarray], float, int]]:
    """Decay chunks of a fast engine (numpy or numba) turned into singles, each with the time up
    to which the scan's singles are complete.

    Singles of later decays can precede their decay time only by the time blur: with 10 sigma of
    guard, no later single can fall before ``last decay time - guard``.

    With a background (``engine.background``), its decays come from their own stream
    (``rng.spawn``, which leaves ``rng``'s draws, hence the source's singles, unchanged) and are
    interleaved in time: after each source chunk, background chunks are simulated until they pass
    its last decay; every yield is complete up to the earlier of the two streams' last decays.
    Background chunks report 0 source decays.
    """
    guard_ns = 1.0 + 10.0 * engine.digitizer.time_resolution_ps * 1e-3 * FWHM_TO_SIGMA
    decays = 0
    bg = getattr(engine, "background", None)
    if bg is None:
        for times in engine.decay_chunks(rng):
            singles = engine.simulate_chunk(times, decays, rng)
            decays += times.size
            yield singles, float(times[-1]) - guard_ns, times.size
        return
    bg_rng = rng.spawn(1)[0]
    bg_chunks = bg.decay_chunks(bg_rng)
    bg_front = -math.inf  # the last background decay simulated (inf: none left)
    bg_decays = 0

    def background_until(t_ns: float, src_front: float):
        nonlocal bg_front, bg_decays
        while bg_front < t_ns:
            times = next(bg_chunks, None)
            if times is None:
                bg_front = math.inf
                return
            singles = bg.simulate_chunk(times, bg_decays, bg_rng)
            bg_decays += times.size
            bg_front = float(times[-1])
            yield singles, min(src_front, bg_front) - guard_ns, 0

    for times in engine.decay_chunks(rng):
        singles = engine.simulate_chunk(times, decays, rng)
        decays += times.size
        src_front = float(times[-1])
        yield singles, min(src_front, bg_front) - guard_ns, times.size
        yield from background_until(src_front, src_front)
    yield from background_until(math.inf, math.inf)


# ---- ray geometry (vectorised) ------------------------------------------------------------------


def _side_distance_soa(st: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Distance along each direction from a point inside an infinite z-cylinder to its side, for a
    state stored by component (rows x, y, z, ux, uy, uz); also returns ux^2 + uy^2, which is ~0
    (and the distance inf or nan) for photons moving along z."""
    x, y, ux, uy = st[0], st[1], st[3], st[4]
    a = ux * ux + uy * uy
    b = x * ux + y * uy
    with np.errstate(divide="ignore", invalid="ignore"):
        disc = b * b - a * (x * x + y * y - radius * radius)
        np.maximum(disc, 0.0, out=disc)
        return (np.sqrt(disc) - b) / a, a


def _exit_cylinder_soa(st: np.ndarray, radius: float, half: float) -> np.ndarray:
    """Distance from a point inside the z-cylinder |xy| <= radius, |z| <= half to its surface along
    the direction, for a state stored by component (rows x, y, z, ux, uy, uz)."""
    z, uz = st[2], st[5]
    t_side, a = _side_distance_soa(st, radius)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_side[a <= 1e-15] = np.inf
        t_z = (np.copysign(half, uz) - z) / uz  # uz == 0: +-inf or nan, both mean "never"
    np.fmin(t_side, t_z, out=t_side)
    return np.maximum(t_side, 0.0, out=t_side)


def _leave_annulus_soa(st: np.ndarray, r_in: float, r_out: float, half: float) -> np.ndarray:
    """Distance from a point in the crystal annulus (r_in <= |xy| <= r_out, |z| <= half) to where
    it leaves it along the direction (outwards, into the bore, or through an end face), for a state
    stored by component (rows x, y, z, ux, uy, uz)."""
    x, y, z, ux, uy, uz = st[0], st[1], st[2], st[3], st[4], st[5]
    a = ux * ux + uy * uy
    b = x * ux + y * uy
    rr = x * x + y * y
    bb = b * b
    with np.errstate(divide="ignore", invalid="ignore"):
        disc_out = bb - a * (rr - r_out * r_out)
        np.maximum(disc_out, 0.0, out=disc_out)
        t = (np.sqrt(disc_out) - b) / a
        disc = bb - a * (rr - r_in * r_in)
        # Heading inwards (b < 0) and the line meets the inner cylinder: leaves into the bore.
        inner = (b < 0) & (disc > 0)
        t_inner = np.where(inner, (-b - np.sqrt(np.maximum(disc, 0.0))) / a, np.inf)
        np.minimum(t, t_inner, out=t)
        t[a <= 1e-15] = np.inf
        t_z = (np.copysign(half, uz) - z) / uz
    np.fmin(t, t_z, out=t)
    return np.maximum(t, 0.0, out=t)
