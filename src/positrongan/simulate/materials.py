"""Photon cross sections of the scene's materials and the interaction samplers.

Cross sections come from xraylib (Schoenfeld et al., xraylib 4, whose photon data are the
EPDL97 / Scofield tables that NIST XCOM also uses): ``CS_Photo_CP``, ``CS_Compt_CP`` and
``CS_Rayl_CP`` in cm^2/g, times the density, give linear attenuation coefficients. At 511 keV
they reproduce the XCOM values of DESIGN.md §4 (mu(Al) = 0.2258 /cm, mu(water) = 0.0960 /cm;
``tests/test_simulate_physics.py`` checks it). Everything is tabulated once on a fine energy
grid so the transport looks coefficients up with one ``np.interp`` per step.

Compton scattering is sampled from the Klein-Nishina formula (free electrons, as in Geant4's
standard ``G4KleinNishinaCompton``); Rayleigh angles from xraylib's differential cross section
of the compound (form factors included), tabulated per energy.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

ELECTRON_MASS_MEV = 0.51099895
# Energy grid of the tables (MeV). Photons below the transport's cut never reach it.
E_MIN_MEV, E_MAX_MEV, N_ENERGIES = 0.010, 0.600, 1181

# name -> (xraylib compound formula, density g/cm^3)
MATERIALS: dict[str, tuple[str, float]] = {
    "Air": ("N0.755O0.232Ar0.013", 0.001205),
    "Water": ("H2O", 1.0),
    "Al": ("Al", 2.699),
    "CaCO3": ("CaCO3", 2.71),
    "Fe2O3": ("Fe2O3", 5.24),
    "Al2O3": ("Al2O3", 3.95),
    "LYSO": ("Lu1.8Y0.2SiO5", 7.1),
    "LSO": ("Lu2SiO5", 7.4),
    "BGO": ("Bi4Ge3O12", 7.13),
    "GSO": ("Gd2SiO5", 6.71),
}


@dataclass(frozen=True)
class CrossSections:
    """Linear attenuation coefficients (1/mm) of one material on :data:`ENERGIES`.

    Attributes:
        name: material name (a key of :data:`MATERIALS`).
        photo, compton, rayleigh: partial coefficients (1/mm), one per grid energy.
    """

    name: str
    photo: np.ndarray
    compton: np.ndarray
    rayleigh: np.ndarray

    @property
    def total(self) -> np.ndarray:
        return self.photo + self.compton + self.rayleigh

    def mu(self, energy_mev: float | np.ndarray, rayleigh: bool = True) -> np.ndarray:
        """Total linear attenuation coefficient (1/mm) at ``energy_mev``."""
        table = self.total if rayleigh else self.photo + self.compton
        return np.interp(energy_mev, ENERGIES, table)


ENERGIES = np.linspace(E_MIN_MEV, E_MAX_MEV, N_ENERGIES)


@functools.lru_cache(maxsize=None)
def cross_sections(name: str) -> CrossSections:
    """Tabulate the partial linear attenuation coefficients of a material (cached).

    Params:
        name: a key of :data:`MATERIALS`.
    Returns:
        :class:`CrossSections` in 1/mm.
    """
    import xraylib

    formula, rho = MATERIALS[name]
    kev = ENERGIES * 1000.0
    # cm^2/g * g/cm^3 = 1/cm; /10 -> 1/mm
    photo = np.array([xraylib.CS_Photo_CP(formula, e) for e in kev]) * rho / 10.0
    compton = np.array([xraylib.CS_Compt_CP(formula, e) for e in kev]) * rho / 10.0
    rayl = np.array([xraylib.CS_Rayl_CP(formula, e) for e in kev]) * rho / 10.0
    return CrossSections(name, photo, compton, rayl)


class MaterialTable:
    """Cross sections of a list of materials indexed by small integers, for vectorised lookup.

    Params:
        names: material names; index k in the list is material id k.
        rayleigh: include Rayleigh scattering in the totals and in the process choice.
    """

    def __init__(self, names: list[str], rayleigh: bool = True):
        self.names = list(names)
        self.rayleigh = rayleigh
        xs = [cross_sections(n) for n in self.names]
        self.photo = np.stack([x.photo for x in xs])
        self.compton = np.stack([x.compton for x in xs])
        self.rayl = np.stack([x.rayleigh for x in xs]) if rayleigh else np.zeros_like(self.photo)
        self.total = self.photo + self.compton + self.rayl
        # Woodcock majorant: the max over materials at every grid energy. Linear interpolation of
        # the node-wise max is >= the interpolation of every material, so it stays a majorant.
        self.majorant = self.total.max(axis=0)
        self._de = ENERGIES[1] - ENERGIES[0]
        # Cumulative partials (photo, photo + compton, total), flattened over (material, energy)
        # so that one 1-D ``take`` per table looks up every photon's material and energy.
        self._cum = [
            np.ascontiguousarray(t).ravel()
            for t in (self.photo, self.photo + self.compton, self.photo + self.compton + self.rayl)
        ]

    def _index(self, energy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f = np.clip((energy - E_MIN_MEV) / self._de, 0.0, N_ENERGIES - 1.000001)
        i = f.astype(np.int64)
        return i, f - i

    def mu_max(self, energy: np.ndarray) -> np.ndarray:
        """Majorant coefficient (1/mm) at each energy."""
        i, w = self._index(energy)
        return self.majorant[i] * (1 - w) + self.majorant[i + 1] * w

    def photo_compton(self, energy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(photo, compton) coefficients (1/mm) of material 0 (a one-material table, e.g. the crystal)."""
        i, w = self._index(energy)
        p, c = self.photo[0], self.compton[0]
        return p[i] * (1 - w) + p[i + 1] * w, c[i] * (1 - w) + c[i + 1] * w

    def cumulative(self, material: np.ndarray, energy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(photo, photo + compton, photo + compton + rayleigh) coefficients (1/mm) per photon.

        The thresholds a uniform r in [0, mu_max) is compared with to choose the process.
        """
        i, w = self._index(energy)
        i += np.asarray(material, dtype=np.int64) * N_ENERGIES
        out = []
        for tab in self._cum:
            lo = tab.take(i)
            out.append(lo + (tab.take(i + 1) - lo) * w)
        return out[0], out[1], out[2]

    def partials(self, material: np.ndarray, energy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(photo, compton, rayleigh) coefficients (1/mm) of each photon's material and energy."""
        i, w = self._index(energy)
        out = []
        for tab in (self.photo, self.compton, self.rayl):
            out.append(tab[material, i] * (1 - w) + tab[material, i + 1] * w)
        return out[0], out[1], out[2]


def sample_klein_nishina(energy_mev: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sample Compton scattering off a free electron (Klein-Nishina), vectorised.

    The method is Geant4's ``G4KleinNishinaCompton`` (Butcher & Messel): sample
    eps = E'/E from a mixture of 1/eps and eps, accept with the rejection function
    1 - eps sin^2(theta) / (1 + eps^2).

    Params:
        energy_mev: incident photon energies (n,).
        rng: numpy Generator.
    Returns:
        (cos_theta, scattered_energy_mev), each (n,).
    """
    # float32 throughout (eps and cos(theta) to ~1e-7, far below any resolution here): half
    # the memory traffic, and float32 exp/log/sqrt are several times faster than float64.
    f32 = np.float32
    k = (np.asarray(energy_mev, dtype=np.float64) / ELECTRON_MASS_MEV).astype(f32)
    n = k.size
    eps_out = np.empty(n, f32)
    cos_out = np.empty(n, f32)
    todo = None  # None: every photon (first round, no gather)
    kk = k
    while kk.size:
        eps0 = f32(1.0) / (f32(1.0) + f32(2.0) * kk)
        eps0sq = eps0 * eps0
        alpha1 = -np.log(eps0)
        alpha2 = alpha1 + f32(0.5) * (f32(1.0) - eps0sq)
        r = rng.random((3, kk.size), dtype=f32)
        first = alpha1 > alpha2 * r[0]
        eps = np.where(first, np.exp(-alpha1 * r[1]), np.sqrt(eps0sq + (f32(1.0) - eps0sq) * r[1]))
        epssq = eps * eps
        onecost = (f32(1.0) - eps) / (eps * kk)
        sint2 = onecost * (f32(2.0) - onecost)
        greject = f32(1.0) - eps * sint2 / (f32(1.0) + epssq)
        ok = greject >= r[2]
        if todo is None and ok.all():
            eps_out, cos_out = eps, f32(1.0) - onecost
            break
        j = np.flatnonzero(ok)
        idx = j if todo is None else todo.take(j)
        eps_out[idx] = eps.take(j)
        cos_out[idx] = f32(1.0) - onecost.take(j)
        rest = np.flatnonzero(~ok)
        todo = rest if todo is None else todo.take(rest)
        kk = k.take(todo)
    np.clip(cos_out, -1.0, 1.0, out=cos_out)
    cos_out = cos_out.astype(np.float64)
    return cos_out, eps_out.astype(np.float64) * np.asarray(energy_mev)


def klein_nishina_pdf_cos(cos_theta: np.ndarray, energy_mev: float) -> np.ndarray:
    """Klein-Nishina d(sigma)/d(cos theta), unnormalised (the analytic reference for tests).

    Params:
        cos_theta: scattering angle cosines.
        energy_mev: incident energy.
    Returns:
        The differential cross section up to a constant factor.
    """
    k = energy_mev / ELECTRON_MASS_MEV
    p = 1.0 / (1.0 + k * (1.0 - cos_theta))  # E'/E
    return p * p * (p + 1.0 / p - (1.0 - cos_theta * cos_theta))


@functools.lru_cache(maxsize=None)
def _rayleigh_cdfs(name: str, n_energies: int, n_angles: int) -> np.ndarray:
    """Angular CDFs (n_energies, n_angles) of Rayleigh scattering in one material (cached)."""
    import xraylib

    energies = np.geomspace(0.05, E_MAX_MEV, n_energies)
    theta = np.linspace(0.0, np.pi, n_angles)
    formula = MATERIALS[name][0]
    cdfs = np.zeros((n_energies, n_angles))
    for j, e in enumerate(energies):
        dcs = np.array([xraylib.DCS_Rayl_CP(formula, e * 1000.0, t) for t in theta])
        pdf = dcs * np.sin(theta)  # per d(theta)
        cdf = np.concatenate([[0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(theta))])
        cdfs[j] = cdf / cdf[-1]
    cdfs.setflags(write=False)
    return cdfs


class RayleighSampler:
    """Sample Rayleigh scattering angles from xraylib's compound differential cross section.

    The angular CDF is tabulated for each material on a coarse energy grid; each photon uses the
    nearest grid energy (Rayleigh is a ~1 % process at these energies, so this is ample).

    Params:
        names: material names, index = material id (as in :class:`MaterialTable`).
    """

    def __init__(self, names: list[str], n_energies: int = 24, n_angles: int = 721):
        self.energies = np.geomspace(0.05, E_MAX_MEV, n_energies)
        theta = np.linspace(0.0, np.pi, n_angles)
        self.cos_grid = np.cos(theta)
        # One table per distinct material, cached per process (a material may appear twice,
        # e.g. air and gas, and every scan of a process uses the same tables).
        self.theta = theta
        self.cdfs = np.stack([_rayleigh_cdfs(name, n_energies, n_angles) for name in names])

    def sample(self, material: np.ndarray, energy_mev: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """cos(theta) of Rayleigh scatters for photons of the given materials and energies."""
        j = np.clip(np.searchsorted(self.energies, energy_mev), 0, len(self.energies) - 1)
        u = rng.random(np.size(energy_mev))
        out = np.empty(np.size(energy_mev))
        # Few (material, energy) cells are hit per call: invert each cell's CDF once.
        key = np.asarray(material) * len(self.energies) + j
        for kcell in np.unique(key):
            sel = key == kcell
            m, jj = divmod(int(kcell), len(self.energies))
            out[sel] = np.interp(u[sel], self.cdfs[m, jj], self.theta)
        return np.cos(out)


def rotate_directions(d: np.ndarray, cos_theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Turn unit vectors ``d`` (n, 3) by polar angle acos(cos_theta) and a uniform azimuth.

    The new direction is built in the frame whose z axis is ``d`` and rotated back with the
    closed form of CLHEP's ``Hep3Vector::rotateUz`` (no cross products, so it vectorises well).

    Params:
        d: unit directions (n, 3).
        cos_theta: cosines of the deflection (n,).
        rng: numpy Generator.
    Returns:
        New unit directions (n, 3).
    """
    return rotate_uvw(np.ascontiguousarray(d.T), cos_theta, rng).T


def rotate_uvw(u: np.ndarray, cos_theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """:func:`rotate_directions` on directions stored by component: ``u`` (3, n) -> new (3, n).

    The azimuth's cosine and sine are computed in float32 (~1e-7, far below any physical
    resolution here; float32 trigonometry is several times faster); the rest in float64.
    """
    n = u.shape[1]
    phi = rng.random(n, dtype=np.float32) * np.float32(2 * np.pi)
    cos_theta = np.asarray(cos_theta, dtype=np.float64)
    sin_t = np.sqrt(np.clip(1.0 - cos_theta * cos_theta, 0.0, None))
    cphi, sphi = _unit_azimuth(phi)
    lx = cphi * sin_t
    ly = sphi * sin_t
    lz = cos_theta
    ux, uy, uz = u[0], u[1], u[2]
    up2 = ux * ux + uy * uy
    up = np.sqrt(up2)
    out = np.empty((3, n))
    with np.errstate(divide="ignore", invalid="ignore"):
        a = (uz * lx) / up
        b = ly / up
        np.multiply(ux, a, out=out[0])
        out[0] -= uy * b
        out[0] += ux * lz
        np.multiply(uy, a, out=out[1])
        out[1] += ux * b
        out[1] += uy * lz
    np.multiply(uz, lz, out=out[2])
    out[2] -= up * lx
    along_z = up2 < 1e-20
    if along_z.any():
        j = np.flatnonzero(along_z)
        sgn = np.where(uz[j] >= 0, 1.0, -1.0)
        out[0, j] = lx[j] * sgn
        out[1, j] = ly[j]
        out[2, j] = lz[j] * sgn
    return out


def isotropic(n: int, rng: np.random.Generator) -> np.ndarray:
    """n isotropic unit vectors (n, 3)."""
    return isotropic_uvw(n, rng).T


def isotropic_uvw(n: int, rng: np.random.Generator) -> np.ndarray:
    """n isotropic unit vectors stored by component (3, n); azimuth trigonometry in float32."""
    out = np.empty((3, n))
    cos_t = out[2]
    rng.random(n, out=cos_t)
    cos_t *= 2.0
    cos_t -= 1.0
    phi = rng.random(n, dtype=np.float32) * np.float32(2 * np.pi)
    s = np.sqrt(1.0 - cos_t * cos_t)
    cphi, sphi = _unit_azimuth(phi)
    np.multiply(cphi, s, out=out[0])
    np.multiply(sphi, s, out=out[1])
    return out


def _unit_azimuth(phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin) of float32 angles, in float64 and renormalised so cos^2 + sin^2 = 1 to 1e-16."""
    c = np.cos(phi).astype(np.float64)
    s = np.sin(phi).astype(np.float64)
    h = 1.0 / np.sqrt(c * c + s * s)
    c *= h
    s *= h
    return c, s
