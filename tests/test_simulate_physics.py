"""Photon physics of the fast engine against known answers: XCOM attenuation coefficients,
the Klein-Nishina angular and energy distributions, Beer-Lambert transmission through an
aluminium wall, and the acollinearity of the photon pairs."""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from helpers import radial_photons, ring_engine, uniform_tube

from positrongan.simulate import materials as mat


def test_attenuation_coefficients_match_nist_xcom_at_511_kev():
    # DESIGN.md §4 (NIST XCOM, total with coherent): Al 0.2258 /cm, water 0.0960 /cm.
    assert mat.cross_sections("Al").mu(0.511) * 10 == pytest.approx(0.2258, rel=0.005)
    assert mat.cross_sections("Water").mu(0.511) * 10 == pytest.approx(0.0960, rel=0.005)
    al = mat.cross_sections("Al")
    i = np.searchsorted(mat.ENERGIES, 0.511)
    assert al.compton[i] / al.total[i] > 0.98  # Compton ~99 % of interactions in Al at 511 keV


@pytest.mark.parametrize("energy", [0.511, 0.15])
def test_klein_nishina_angles_follow_the_analytic_distribution(energy):
    rng = np.random.default_rng(42)
    n = 200_000
    cos_t, e_out = mat.sample_klein_nishina(np.full(n, energy), rng)
    edges = np.linspace(-1, 1, 41)
    counts, _ = np.histogram(cos_t, edges)
    norm = integrate.quad(lambda c: mat.klein_nishina_pdf_cos(c, energy), -1, 1)[0]
    expected = (
        np.array(
            [
                integrate.quad(lambda c: mat.klein_nishina_pdf_cos(c, energy), a, b)[0]
                for a, b in zip(edges[:-1], edges[1:])
            ]
        )
        / norm
        * n
    )
    chi2 = np.sum((counts - expected) ** 2 / expected)
    assert stats.chi2.sf(chi2, len(counts) - 1) > 1e-3, chi2
    # Energy is tied to the angle by the Compton formula.
    k = energy / mat.ELECTRON_MASS_MEV
    assert np.allclose(e_out, energy / (1 + k * (1 - cos_t)))


def test_klein_nishina_energies_follow_the_analytic_cdf():
    rng = np.random.default_rng(7)
    energy = 0.511
    _, e_out = mat.sample_klein_nishina(np.full(50_000, energy), rng)
    k = energy / mat.ELECTRON_MASS_MEV
    norm = integrate.quad(lambda c: mat.klein_nishina_pdf_cos(c, energy), -1, 1)[0]

    def cdf(e):  # E' <= e  <=>  cos(theta) <= 1 - (E/e - 1) / k
        c = np.clip(1 - (energy / np.asarray(e) - 1) / k, -1, 1)
        return (
            np.array(
                [integrate.quad(lambda x: mat.klein_nishina_pdf_cos(x, energy), -1, ci)[0] for ci in np.atleast_1d(c)]
            )
            / norm
        )

    grid = np.linspace(e_out.min(), energy, 400)
    table = cdf(grid)
    res = stats.kstest(e_out, lambda e: np.interp(e, grid, table))
    assert res.pvalue > 1e-3, res


def test_rotation_keeps_the_requested_angle_and_unit_length():
    rng = np.random.default_rng(3)
    d = mat.isotropic(10000, rng)
    d[:5] = [0, 0, 1]  # along z: the special case of the rotation
    d[5:10] = [0, 0, -1]
    cos_t = rng.uniform(-1, 1, 10000)
    out = mat.rotate_directions(d, cos_t, rng)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-12)
    assert np.allclose(np.sum(out * d, axis=1), cos_t, atol=1e-12)


def _engine(tube, **sim):
    return ring_engine("numpy", tube, simulation={"max_scatter_orders": 0, **sim})


@pytest.mark.parametrize("start", ["inner_surface", "centre"])
def test_unscattered_fraction_through_the_wall_is_beer_lambert(start):
    # A round tube with a uniform 20 mm aluminium wall; photons fly radially outwards. With no
    # scatter followed, a photon survives only if it never interacts: P = exp(-sum mu_i L_i).
    tube = uniform_tube(length_mm=200.0, a_mm=50.0, b_mm=50.0, wall_mm=20.0)
    eng = _engine(tube)
    rng = np.random.default_rng(11)
    n = 100_000
    r0 = 30.0 + 1e-6 if start == "inner_surface" else 0.0
    ph = eng.transport_phantom(radial_photons(n, r0, rng), rng)
    mu_al = mat.cross_sections("Al").mu(0.511)
    mu_w = mat.cross_sections("Water").mu(0.511)
    mu_air = mat.cross_sections("Air").mu(0.511)
    path = 20.0 * mu_al + (30.0 - r0) * mu_w + 1.0 * mu_air  # 1 mm of air to the bounding cylinder
    expected = math.exp(-path)
    got = ph.alive.mean()
    assert abs(got - expected) < 4 * math.sqrt(expected * (1 - expected) / n), (got, expected)
    assert np.all(ph.energy[ph.alive] == 0.511)


def test_scattered_photons_lose_energy_and_are_flagged():
    tube = uniform_tube(length_mm=200.0, a_mm=50.0, b_mm=50.0, wall_mm=20.0)
    eng = _engine(tube, max_scatter_orders=5, rayleigh=False)
    rng = np.random.default_rng(5)
    ph = eng.transport_phantom(radial_photons(50_000, 0.0, rng), rng)
    scat = ph.alive & (ph.scatters > 0)
    assert scat.sum() > 1000
    assert np.all(ph.energy[scat] < 0.511) and np.all(ph.energy[ph.alive & (ph.scatters == 0)] == 0.511)
    assert np.all(ph.energy[ph.alive] >= eng.e_cut)


def test_acollinearity_has_the_configured_fwhm():
    tube = uniform_tube()
    eng = _engine(tube, acollinearity_fwhm_deg=0.5)
    rng = np.random.default_rng(9)
    n = 50_000
    _, ph = eng.emit(np.zeros(n), rng)
    dev = np.degrees(np.arccos(np.clip(-np.sum(ph.dir[:n] * ph.dir[n:], axis=1), -1, 1)))
    # Two Gaussian components of sigma s: the deviation is Rayleigh-distributed, median s sqrt(2 ln 2).
    s = 0.5 / (2 * math.sqrt(2 * math.log(2)))
    assert np.median(dev) == pytest.approx(s * math.sqrt(2 * math.log(2)), rel=0.03)


def test_positron_range_displaces_annihilations_by_the_f18_mean_range():
    eng = ring_engine("numpy", uniform_tube(), phantom={"positron_range": True})
    rng = np.random.default_rng(12)
    n = 40_000
    src, ph = eng.emit(np.zeros(n), rng)
    shift = np.linalg.norm(ph.pos[:n] - src, axis=1)
    assert np.array_equal(ph.pos[:n], ph.pos[n:])  # both photons start at the annihilation point
    assert shift.mean() == pytest.approx(0.6, rel=0.02)
    # Isotropic: the mean displacement vector vanishes.
    assert np.all(np.abs((ph.pos[:n] - src).mean(axis=0)) < 5 * 0.6 / np.sqrt(n))
