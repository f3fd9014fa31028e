"""The system model and MLEM/OSEM against known answers: exact chord lengths, count conservation,
reconstruction of a known phantom, monotone likelihood, OSEM(1) = MLEM, attenuation correction."""

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from positrongan.geometry.scanner import Scanner
from positrongan.recon.attenuation import attenuation_factors, randoms_estimate
from positrongan.recon.mlem import reconstruct
from positrongan.recon.projector import SystemModel, build_system_model, siddon

SCANNER = Scanner(crystals_per_ring=96, rings=2)
GRID, FOV = 32, 64.0
RCFG = {"grid": GRID, "fov_mm": FOV, "doi_mm": 0.0, "max_ring_difference": None}


@pytest.fixture(scope="module")
def model():
    return build_system_model(SCANNER, RCFG)


def pixel_xy():
    c = -FOV / 2 + (np.arange(GRID) + 0.5) * FOV / GRID
    return np.meshgrid(c, c)  # x varies along columns, y along rows: image[y, x]


def phantom():
    x, y = pixel_xy()
    img = ((x / 25) ** 2 + (y / 18) ** 2 < 1) * 1.0
    img += ((x - 9) ** 2 + y**2 < 36) * 2.0
    img -= ((x + 9) ** 2 + (y - 4) ** 2 < 16) * 1.0
    return img.astype(np.float32)


def project(model, vol):
    """Noise-free data of the reconstruction model: plane weight x A x."""
    planes = len(vol)
    line = (model.matrix @ vol.reshape(planes, -1).T).T.reshape(planes, *model.sino_shape)
    return line * model.plane_weight[:, None, None]


def test_siddon_row_sums_are_chord_lengths_through_the_grid():
    # Rays through the square [-32, 32]^2: axis-parallel, through a corner, steep, and missing it.
    p0 = np.array([[-100, 3.0], [5.0, -100], [-100, -100], [-100, -40], [-100, 50.0], [-80, 31.9]])
    p1 = np.array([[100, 3.0], [5.0, 100], [100, 100], [100, 10.0], [100, 50.0], [80, -31.9]])
    mat = siddon(p0, p1, GRID, FOV)
    d = p1 - p0
    expected = []
    for a, v in zip(p0, d):  # Liang-Barsky clipping gives the chord inside the square
        lo, hi = 0.0, 1.0
        for k in range(2):
            if v[k] == 0:
                if abs(a[k]) > FOV / 2:
                    lo, hi = 1, 0
                continue
            t1, t2 = sorted(((-FOV / 2 - a[k]) / v[k], (FOV / 2 - a[k]) / v[k]))
            lo, hi = max(lo, t1), min(hi, t2)
        expected.append(max(hi - lo, 0) * np.hypot(*v))
    np.testing.assert_allclose(np.asarray(mat.sum(1)).ravel(), expected, rtol=1e-5, atol=1e-4)
    # The horizontal ray at y = 3 crosses each pixel of row 17 over one full pixel width.
    row = mat[0].toarray().reshape(GRID, GRID)
    np.testing.assert_allclose(row[17], FOV / GRID, rtol=1e-5)
    assert row.sum() == pytest.approx(row[17].sum())


def blob():
    x, y = pixel_xy()
    return np.exp(-((x - 7) ** 2 + (y + 4) ** 2) / (2 * 6.0**2)).astype(np.float32)


@pytest.mark.parametrize("theta_deg", [0.0, 90.0, 45.0, 17.3])
def test_line_integrals_conserve_counts_at_every_angle(theta_deg):
    """Densely sampled parallel rays at one angle integrate to the image's total (pixel values
    x pixel area), including rays that run exactly along pixel boundaries."""
    img = blob()
    th = np.deg2rad(theta_deg)
    n, d = np.array([np.cos(th), np.sin(th)]), np.array([-np.sin(th), np.cos(th)])
    r = np.linspace(-50, 50, 2001)  # 0.05 mm apart, many exactly on pixel edges at 0 and 90 deg
    mat = siddon(r[:, None] * n - 200 * d, r[:, None] * n + 200 * d, GRID, FOV)
    total = img.sum() * (FOV / GRID) ** 2
    assert np.trapezoid(mat @ img.ravel(), r) == pytest.approx(total, rel=1e-5)


def test_forward_model_conserves_counts(model):
    """The ring's own samples: for each exact angle, the quadrature of its line integrals over
    their radial positions gives the image's total. Along the pixel axes (0 and 90 deg) the
    projection of a pixel image is a staircase that the ~4 mm ring sampling hits at nearly the
    same place in each stair, so those few angles are off by a few per cent; the others and the
    mean over angles agree to better than 0.5 %."""
    img = blob()
    line = (model.matrix @ img.ravel()).reshape(model.sino_shape)
    r = model.geometry.radial_mm()
    total = img.sum() * (FOV / GRID) ** 2
    err = []
    for view in range(model.geometry.n_views):
        for parity in (0, 1):  # the two exact angles interleaved in one view
            sel = (np.arange(model.geometry.t_lo, model.geometry.t_hi + 1) % 2) == parity
            err.append(abs(np.trapezoid(line[view, sel], r[sel])) / total - 1)
    err = np.abs(np.array(err))
    assert np.mean(err) < 0.005
    assert np.median(err) < 0.002
    assert np.sum(err > 0.01) <= 4
    assert err.max() < 0.1


def test_mlem_forward_projection_keeps_the_measured_counts(model):
    """Without randoms, every MLEM iterate's forward projection sums to the measured counts."""
    counts, atten, _ = noisy_case(model, randoms_level=0.0)
    for it in (1, 2, 5):
        img = reconstruct(model, counts, iterations=it, subsets=1, attenuation=atten, show_progress=False).image
        expected = project(model, img) * atten
        np.testing.assert_allclose(expected.sum((1, 2)), counts.sum((1, 2)), rtol=1e-4)


def test_noise_free_phantom_reconstructs_close_to_truth(model):
    vol = np.stack([phantom()] * model.plane_weight.size)
    res = reconstruct(model, project(model, vol), iterations=60, subsets=4, show_progress=False)
    for p in range(len(vol)):
        s = structural_similarity(vol[p], res.image[p], data_range=float(vol.max()))
        assert s >= 0.9, f"plane {p}: SSIM {s:.3f}"
    # Each plane's total activity is recovered (its weight was divided out).
    np.testing.assert_allclose(res.image.sum((1, 2)), vol.sum((1, 2)), rtol=0.02)


def noisy_case(model, seed=3, randoms_level=0.3):
    rng = np.random.default_rng(seed)
    vol = np.stack([phantom(), 0.5 * phantom()[::-1], phantom().T])
    mu = np.where(vol > 0, 0.01, 0.0).astype(np.float32)
    atten = attenuation_factors(model, mu)
    randoms = np.full_like(atten, randoms_level)
    counts = rng.poisson(project(model, vol) * atten * 0.05 + randoms).astype(np.float32)
    return counts, atten, randoms


def test_mlem_loglik_never_decreases(model):
    counts, atten, randoms = noisy_case(model)
    res = reconstruct(model, counts, iterations=30, subsets=1, attenuation=atten, randoms=randoms, show_progress=False)
    assert len(res.loglik) == 30
    assert np.all(np.isfinite(res.loglik))
    steps = np.diff(res.loglik)
    assert steps.min() >= -1e-9 * abs(res.loglik[-1]), steps.min()
    assert res.loglik[-1] > res.loglik[0]


def test_osem_with_one_subset_equals_a_reference_mlem(model):
    counts, atten, randoms = noisy_case(model, seed=4)
    res = reconstruct(model, counts, iterations=8, subsets=1, attenuation=atten, randoms=randoms, show_progress=False)
    # Reference: textbook MLEM with a dense matrix, plane by plane, in float64.
    a = model.matrix.toarray().astype(np.float64)
    for p in range(len(counts)):
        m = model.plane_weight[p] * atten[p].ravel().astype(np.float64)
        y, r = counts[p].ravel().astype(np.float64), randoms[p].ravel().astype(np.float64)
        sens = a.T @ m
        x = np.full(a.shape[1], max((y - r).sum(), 0) / (m * (a @ np.ones(a.shape[1]))).sum())
        for _ in range(8):
            x = x / sens * (a.T @ (m * y / (m * (a @ x) + r)))
        np.testing.assert_allclose(res.image[p].ravel(), x, rtol=2e-3, atol=1e-4 * x.max())


def test_osem_subsets_agree_with_mlem_at_convergence_speed(model):
    """OSEM with S subsets is an accelerated MLEM: after k iterations it is close to MLEM
    after k*S iterations on noise-free data."""
    vol = np.stack([phantom()] * 3)
    data = project(model, vol)
    osem = reconstruct(model, data, iterations=5, subsets=4, show_progress=False).image
    mlem = reconstruct(model, data, iterations=20, subsets=1, show_progress=False).image
    assert np.abs(osem - mlem).mean() < 0.05 * vol.mean() * 4


def chord(r, radius):
    return 2 * np.sqrt(np.clip(radius**2 - r**2, 0, None))


def test_attenuation_correction_restores_a_uniform_cylinder(model):
    """Analytic data of a uniform disc of aluminium-like attenuation (not made with the system
    model): without correction the centre is depressed; with the known mu-map the profile is
    flat within 5 %."""
    radius, mu_val = 24.0, 0.02258
    r = np.abs(model.geometry.radial_mm())
    ell = chord(r, radius)[None, :] * np.ones(model.sino_shape)
    data = np.stack([ell * np.exp(-mu_val * ell) * w for w in model.plane_weight]).astype(np.float32)
    x, y = pixel_xy()
    # Voxelised mu-map: fraction of each pixel inside the disc (supersampled), as a truth map would be.
    sub = 8
    fine = -FOV / 2 + (np.arange(GRID * sub) + 0.5) * FOV / (GRID * sub)
    fx, fy = np.meshgrid(fine, fine)
    frac = ((fx**2 + fy**2) <= radius**2).reshape(GRID, sub, GRID, sub).mean((1, 3))
    mu = np.stack([mu_val * frac] * len(data)).astype(np.float32)
    rr = np.hypot(x, y)
    kw = {"iterations": 20, "subsets": 4, "show_progress": False}
    plain = reconstruct(model, data, **kw).image[0]
    corrected = reconstruct(model, data, attenuation=attenuation_factors(model, mu), **kw).image[0]

    def radial_profile(img):  # mean in 2 mm annuli out to 0.7 of the radius (away from the edge)
        return np.array([img[(rr >= a) & (rr < a + 2)].mean() for a in np.arange(0, 0.7 * radius, 2)])

    prof = radial_profile(corrected)
    # The true concentration is 1: every annulus within 5 %.
    np.testing.assert_allclose(prof, 1.0, rtol=0.05)
    raw = radial_profile(plain)
    assert (raw.max() - raw.min()) / raw.mean() > 0.2  # uncorrected: the centre is depressed


def test_randoms_estimate_keeps_the_total():
    rng = np.random.default_rng(5)
    delayed = rng.poisson(2.0, size=(5, 12, 9)).astype(np.float32)
    est = randoms_estimate(delayed, (3, 5, 3))
    assert est.sum() == pytest.approx(delayed.sum(), rel=0.05)
    assert est.std() < delayed.std()


def test_system_model_round_trips_and_checks_its_fingerprint(model, tmp_path):
    from positrongan.errors import ArtifactError

    model.save(tmp_path / "m.npz")
    back = SystemModel.load(tmp_path / "m.npz", expect_fingerprint=model.fingerprint)
    assert (back.matrix != model.matrix).nnz == 0
    assert back.geometry == model.geometry
    with pytest.raises(ArtifactError, match="m.npz"):
        SystemModel.load(tmp_path / "m.npz", expect_fingerprint=model.fingerprint.replace("32", "33"))


@pytest.mark.gpu
def test_cuda_reconstruction_matches_cpu(model):
    counts, atten, randoms = noisy_case(model)
    kw = {"iterations": 5, "subsets": 4, "attenuation": atten, "randoms": randoms, "show_progress": False}
    cpu = reconstruct(model, counts, device="cpu", **kw)
    gpu = reconstruct(model, counts, device="cuda", **kw)
    np.testing.assert_allclose(gpu.image, cpu.image, rtol=1e-3, atol=1e-5 * cpu.image.max())
    np.testing.assert_allclose(gpu.loglik, cpu.loglik, rtol=1e-6)
