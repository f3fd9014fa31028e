"""Fully 3D reconstruction (reconstruction.mode: 3d): the projector's adjoint and line integrals,
the 3D sinogram's binning, fan-sum randoms, MLEM's likelihood and count conservation, a
noise-free phantom, axial resolution against the 2D mode, and the CLI without a system model."""

import math

import numpy as np
import pytest
import torch

from positrongan.geometry.scanner import Scanner
from positrongan.recon.lors import SinogramGeometry, rebin
from positrongan.recon.mlem import reconstruct
from positrongan.recon.osem3d import fan_sum_randoms, reconstruct_3d, reconstruct_scan_3d
from positrongan.recon.projector import build_system_model
from positrongan.recon.projector3d import ImageGrid, RingProjector3D, back_lors, forward_lors

SCANNER = Scanner(crystals_per_ring=64, rings=8)
FOV, GRID = 32.0, 16  # 2 mm pixels, planes 2 mm apart (axial pitch 4 mm)


def synthetic_singles_rates(n_crystals, *crystal_ids):
    """A ``SinglesRates`` tree for hand-made ROOT files: four singles per coincidence end plus a
    floor, so that every crystal's prompts are a plausible fraction of its singles."""
    counts = 4 * np.bincount(np.concatenate(crystal_ids), minlength=n_crystals) + 50
    return {"CrystalID": np.arange(n_crystals, dtype=np.int32), "Counts": counts.astype(np.int64)}


def projector(dtype=torch.float64, subsets=1, **kw):
    return RingProjector3D(SCANNER, FOV, GRID, 0.0, subsets=subsets, dtype=dtype, **kw)


def coords(grid: ImageGrid):
    """Voxel centre coordinates z, y, x (broadcastable)."""
    nz, ny, nx = grid.shape
    z = grid.origin_mm[0] + np.arange(nz) * grid.voxel_mm[0]
    y = grid.origin_mm[1] + np.arange(ny) * grid.voxel_mm[1]
    x = grid.origin_mm[2] + np.arange(nx) * grid.voxel_mm[2]
    return z[:, None, None], y[None, :, None], x[None, None, :]


def phantom(grid: ImageGrid):
    """A warm off-centre cylinder with a cold sphere and a hot rod, shorter than the scanner."""
    z, y, x = coords(grid)
    vol = ((((x - 2) / 11) ** 2 + ((y + 1) / 9) ** 2) < 1) & (np.abs(z) < 10)
    vol = vol.astype(np.float64)
    vol[((x - 4) ** 2 + (y + 1) ** 2 + z**2) < 4.5**2] = 0.0
    vol[(((x + 4) ** 2 + (y - 2) ** 2) < 2.5**2) & (np.abs(z) < 10)] = 2.0
    return vol


def test_projector_is_the_exact_adjoint_and_equals_the_general_projector():
    proj = projector(subsets=3, lors_per_batch=64 * 40)
    assert len(proj.chunks) > 3  # several chunks and subsets are exercised
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random(proj.image_grid.shape))
    y = torch.from_numpy(rng.random(proj.shape))
    lhs, rhs = float((proj.forward(x) * y).sum()), float((x * proj.back(y)).sum())
    assert lhs == pytest.approx(rhs, rel=1e-10)
    for s in range(3):
        lo, hi = proj.subset_range(s)
        ys = y[:, lo:hi]
        assert float((proj.forward(x, s) * ys).sum()) == pytest.approx(float((x * proj.back(ys, s)).sum()), rel=1e-10)
    # The factorised scanner projector is the general one on the scanner's LORs.
    a, b = (torch.from_numpy(e.reshape(-1, 3)) for e in proj.lor_endpoints())
    general = forward_lors(x, a, b, proj.image_grid, proj.steps, max_points=50000).reshape(proj.shape)
    np.testing.assert_allclose(proj.forward(x).numpy(), general.numpy(), rtol=1e-9, atol=1e-9)
    back = back_lors(y.reshape(-1), a, b, proj.image_grid, proj.steps, max_points=50000)
    np.testing.assert_allclose(proj.back(y).numpy(), back.numpy(), rtol=1e-9, atol=1e-9)
    # The general projector is its own exact adjoint too.
    v = torch.from_numpy(rng.random(len(a)))
    fa = float((forward_lors(x, a, b, proj.image_grid, 40) * v).sum())
    assert fa == pytest.approx(float((x * back_lors(v, a, b, proj.image_grid, 40)).sum()), rel=1e-10)


def test_line_integral_of_a_uniform_cylinder_is_the_chord_length_times_its_value():
    # Fine grid (0.5 mm) so the voxelised boundary costs well under a voxel per chord.
    grid = ImageGrid((81, 128, 128), (0.5, 0.5, 0.5), (-20.0, -31.75, -31.75), None)
    z, y, x = coords(grid)
    radius, value = 20.0, 0.7
    cyl = torch.from_numpy(np.broadcast_to((x**2 + y**2 <= radius**2) * value, grid.shape).copy())
    rng = np.random.default_rng(1)
    n = 200
    offset = rng.uniform(-15, 15, n)  # distance of the chord from the axis
    phi = rng.uniform(0, np.pi, n)
    slope = rng.uniform(-0.15, 0.15, n)  # dz per transaxial mm: stays inside the z range
    u = np.stack([np.cos(phi), np.sin(phi)], 1)
    nrm = np.stack([-np.sin(phi), np.cos(phi)], 1)
    half = 60.0
    p0 = np.column_stack([offset[:, None] * nrm - half * u, -half * slope])
    p1 = np.column_stack([offset[:, None] * nrm + half * u, half * slope])
    got = forward_lors(cyl, torch.from_numpy(p0), torch.from_numpy(p1), grid, 480).numpy()
    chord = 2 * np.sqrt(radius**2 - offset**2) * np.sqrt(1 + slope**2)
    # Each of the two boundary crossings of the voxelised cylinder errs by a fraction of a voxel.
    np.testing.assert_allclose(got, value * chord, rtol=0, atol=value * 1.5 * grid.voxel_mm[1])
    assert abs(got.sum() / (value * chord).sum() - 1) < 0.002  # and without bias


def test_scanner_lors_integrate_a_cylinder_to_its_chord_length():
    proj = projector()
    z, y, x = coords(proj.image_grid)
    radius = 11.0
    cyl = torch.from_numpy(np.broadcast_to((x**2 + y**2 <= radius**2) * 1.0, proj.image_grid.shape).copy())
    got = proj.forward(cyl).numpy()
    a, b = proj.lor_endpoints()
    d = b - a
    lxy = np.hypot(d[..., 0], d[..., 1])
    # Distance of each chord from the axis; chord length through the infinite cylinder in 3D.
    rho = np.abs(a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]) / lxy
    # The voxelised cylinder's area, as a radius (2 mm voxels).
    r_eff = np.sqrt((x**2 + y**2 <= radius**2).sum() * 4.0 / np.pi)
    chord = 2 * np.sqrt(np.clip(r_eff**2 - rho**2, 0, None)) * np.linalg.norm(d, axis=-1) / lxy
    # 2 mm voxels: each boundary crossing of the voxelised cylinder errs by up to a voxel along
    # the chord's transaxial path; over all LORs the errors cancel.
    slack = 2 * 2.0 * np.linalg.norm(d, axis=-1) / lxy
    assert (np.abs(got - chord) <= slack).all()
    assert abs(got.sum() / chord.sum() - 1) < 0.02


def test_events_bin_to_their_own_lor_in_either_order():
    proj = projector()
    rng = np.random.default_rng(2)
    c1, c2 = rng.integers(0, SCANNER.n_crystals, (2, 5000))
    flat, valid = proj.bin_events(c1, c2)
    flat_swapped, valid_swapped = proj.bin_events(c2, c1)
    np.testing.assert_array_equal(valid, valid_swapped)
    np.testing.assert_array_equal(flat[valid], flat_swapped[valid])
    a, b = proj.lor_endpoints()
    ends = np.stack([a.reshape(-1, 3)[flat[valid]], b.reshape(-1, 3)[flat[valid]]], 1)
    geom = proj.geometry
    pos = SCANNER.crystal_centre(np.stack([c1[valid], c2[valid]], 1), depth_mm=geom.radius_mm - SCANNER.inner_radius_mm)
    same = np.isclose(ends, pos, atol=1e-6).all((1, 2)) | np.isclose(ends, pos[:, ::-1], atol=1e-6).all((1, 2))
    assert same.all()
    # Validity: exactly the pairs whose chord crosses the FOV circle (the 2D rebinning's cells).
    _, _, want = geom.cell_of_pair(*(SCANNER.ring_and_index(c)[1] for c in (c1, c2)))
    np.testing.assert_array_equal(valid, want)
    sino, n = proj.histogram(c1, c2)
    assert sino.sum() == n == valid.sum()


def test_fan_sum_randoms_keep_the_delayed_total_and_follow_singles_rates():
    proj = projector()
    rng = np.random.default_rng(3)
    singles = rng.uniform(0.2, 1.0, SCANNER.n_crystals)
    p = singles / singles.sum()
    n = 400_000
    d1, d2 = rng.choice(SCANNER.n_crystals, n, p=p), rng.choice(SCANNER.n_crystals, n, p=p)
    est, n_in = fan_sum_randoms(proj, d1, d2)
    assert est.sum() == pytest.approx(n_in, rel=1e-5)
    # Expected counts of each LOR under the generating model, restricted to the sinogram.
    ra, rb = proj.ring1, proj.ring2
    ia, ib = proj.crystal_a, proj.crystal_b
    sa = singles.reshape(SCANNER.rings, -1)
    truth = sa[ra][:, ia] * sa[rb][:, ib]
    truth *= n_in / truth.sum()
    # Fan sums average about 1500 events each: a few per cent of noise per LOR, no bias.
    assert np.sqrt(np.mean((est / truth - 1) ** 2)) < 0.05
    assert abs(est.sum() / truth.sum() - 1) < 1e-6
    assert np.corrcoef(est.ravel(), truth.ravel())[0, 1] > 0.99


def noise_free_data(proj, x_true):
    x = torch.from_numpy(x_true)
    mu = torch.from_numpy(0.01 * (x_true > 0))
    atten = torch.exp(-proj.forward(mu))
    line = proj.forward(x)
    randoms = torch.full(proj.shape, 0.02 * float(line.mean()), dtype=line.dtype)
    return (atten * line + randoms).numpy(), atten.numpy(), randoms.numpy()


def test_noise_free_phantom_reconstructs_to_ssim_above_0_9():
    from skimage.metrics import structural_similarity

    proj = projector(subsets=4)
    x_true = phantom(proj.image_grid)
    y, atten, randoms = noise_free_data(proj, x_true)
    res = reconstruct_3d(proj, y, 40, attenuation=atten, randoms=randoms, show_progress=False)
    img = res.image.astype(np.float64)
    ssim = structural_similarity(img, x_true, data_range=float(x_true.max()))
    assert ssim >= 0.9, ssim
    inside = x_true == 1.0
    assert img[inside].mean() == pytest.approx(1.0, rel=0.05)  # quantitative, with AC and randoms


def test_mlem_likelihood_never_decreases_and_counts_are_conserved():
    proj = projector(subsets=1)
    x_true = phantom(proj.image_grid)
    ybar, atten, _ = noise_free_data(proj, x_true)
    y = np.random.default_rng(4).poisson(ybar * 0.2 / ybar.mean()).astype(np.float64)
    res = reconstruct_3d(proj, y, 8, attenuation=atten, show_progress=False)
    assert np.all(np.diff(res.loglik) >= -1e-9 * np.abs(res.loglik).max())
    assert res.loglik[-1] > res.loglik[0]
    # MLEM without additive terms: the image's expected counts sum(a * A x) = sum_v sens_v x_v
    # equal the measured counts after every update.
    expected = float((torch.from_numpy(atten) * proj.forward(torch.from_numpy(res.image).double())).sum())
    assert expected == pytest.approx(y.sum(), rel=1e-4)
    # The likelihood of the last iteration is the model's at the final image.
    yb = atten * proj.forward(torch.from_numpy(res.image).double()).numpy()
    from scipy.special import gammaln

    pos = y > 0
    ll = (y[pos] * np.log(yb[pos])).sum() - yb.sum() - gammaln(y + 1).sum()
    assert res.loglik[-1] == pytest.approx(ll, rel=1e-4)


def point_source_events(scanner, point, n, rng, radius):
    """Crystal pairs of back-to-back photons from a point (x, y, z) hitting a cylinder of
    ``radius`` (the LOR end-point radius), isotropic in 3D."""
    cos_t = rng.uniform(-1, 1, n)
    phi = rng.uniform(0, 2 * np.pi, n)
    sin_t = np.sqrt(1 - cos_t**2)
    u = np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], 1)
    pos = np.broadcast_to(np.asarray(point, float), (n, 3))
    ids = []
    for sign in (1, -1):
        d = sign * u
        a = (d[:, :2] ** 2).sum(1)
        b = 2 * (pos[:, :2] * d[:, :2]).sum(1)
        c = (pos[:, :2] ** 2).sum(1) - radius**2
        s = (-b + np.sqrt(b * b - 4 * a * c)) / (2 * a)
        hit = pos + s[:, None] * d
        ids.append(scanner.locate(hit[:, 0], hit[:, 1], hit[:, 2]))
    ok = (ids[0] >= 0) & (ids[1] >= 0)
    return ids[0][ok], ids[1][ok]


def fwhm(profile, step):
    """FWHM of a single-peaked profile by linear interpolation of the half-maximum crossings."""
    k = int(np.argmax(profile))
    half = profile[k] / 2
    lo = k
    while lo > 0 and profile[lo - 1] > half:
        lo -= 1
    hi = k
    while hi < len(profile) - 1 and profile[hi + 1] > half:
        hi += 1
    left = lo - 1 + (half - profile[lo - 1]) / (profile[lo] - profile[lo - 1]) if lo > 0 else lo
    right = hi + (profile[hi] - half) / (profile[hi] - profile[hi + 1]) if hi < len(profile) - 1 else hi
    return (right - left) * step


def test_axial_resolution_of_a_point_source_is_no_worse_than_the_2d_mode():
    scanner = Scanner(crystals_per_ring=64, rings=12)
    cfg = {
        "grid": 16,
        "fov_mm": 32.0,
        "doi_mm": 0.0,
        "max_ring_difference": 4,
        "algorithm": "mlem",
        "subsets": 1,
        "iterations": 20,
        "randoms_correction": False,
        "scatter_correction": False,
        "scatter_updates": [],
        "step_voxels": 1.0,
        "lors_per_batch": 200_000,
    }
    point = (9.0, 3.0, 1.0)  # off axis, between planes
    c1, c2 = point_source_events(scanner, point, 200_000, np.random.default_rng(5), scanner.inner_radius_mm)
    # 3D mode.
    res3, info = reconstruct_scan_3d(c1, c2, None, scanner, cfg, None, "cpu")
    # 2D mode: single-slice rebinning with the same iterations.
    model = build_system_model(scanner, cfg)
    sino, _ = rebin(c1, c2, scanner, model.geometry, cfg["max_ring_difference"])
    res2 = reconstruct(model, sino, cfg["iterations"], 1, show_progress=False)
    profiles = []
    for img in (res3.image, res2.image):
        k = np.unravel_index(np.argmax(img), img.shape)
        profiles.append(img[:, k[1], k[2]])
    f3, f2 = fwhm(profiles[0], 2.0), fwhm(profiles[1], 2.0)
    assert info["prompts"] == len(c1)  # every event binned
    assert f3 <= f2 * 1.02, (f3, f2)


def test_reconstruct_cli_in_3d_mode_needs_no_system_model(tmp_path):
    import uproot

    from positrongan.cli import main

    rng = np.random.default_rng(6)
    grid = RingProjector3D(SCANNER, FOV, GRID, 0.0).image_grid
    act = phantom(grid).astype(np.float32)
    # Events from a point cloud drawn from the phantom, each a random direction.
    idx = rng.choice(act.size, 30000, p=act.ravel() / act.sum())
    k, iy, ix = np.unravel_index(idx, act.shape)
    pts = np.stack([grid.origin_mm[2] + ix * 2.0, grid.origin_mm[1] + iy * 2.0, grid.origin_mm[0] + k * 2.0], 1)
    c1, c2 = [], []
    for p in pts[:3000]:
        a, b = point_source_events(SCANNER, p, 10, rng, SCANNER.inner_radius_mm)
        c1.append(a)
        c2.append(b)
    c1, c2 = np.concatenate(c1), np.concatenate(c2)
    d1, d2 = rng.integers(0, SCANNER.n_crystals, (2, 300))
    root = tmp_path / "scan_000.root"
    with uproot.recreate(root) as fh:
        fh["Coincidences"] = {"CrystalID1": c1.astype(np.int32), "CrystalID2": c2.astype(np.int32)}
        fh["Delayed"] = {"CrystalID1": d1.astype(np.int32), "CrystalID2": d2.astype(np.int32)}
        # Singles per crystal (the randoms model needs them under kill_all): a few per prompt.
        fh["SinglesRates"] = synthetic_singles_rates(SCANNER.n_crystals, c1, c2, d1, d2)
    truth = tmp_path / "truth.npz"
    np.savez(
        truth,
        activity=act,
        mu=(0.0096 * (act > 0)).astype(np.float32),
        defects=np.zeros(act.shape, np.uint8),
        voxel_mm=np.array([2.0, 2.0, 2.0]),
        origin_mm=np.array(grid.origin_mm),
    )
    sets = [
        "scanner.crystals_per_ring=64",
        "scanner.rings=8",
        f"reconstruction.grid={GRID}",
        f"reconstruction.fov_mm={FOV}",
        "reconstruction.doi_mm=0.0",
        "reconstruction.iterations=3",
        "reconstruction.subsets=2",
        "reconstruction.mode=3d",
        "reconstruction.dicom=false",
        "phantom.outer_semi_axes_mm=[12.0, 10.0]",
        "phantom.bend_mm=[0.0, 1.0]",
        "device=cpu",
    ]
    opts = [a for s in sets for a in ("--set", s)]
    out = tmp_path / "scan_000.npz"
    args = ["--scan", "scan_000", "--root", str(root), "--truth", str(truth), "--out", str(out)]
    assert main(["reconstruct", *opts, *args, "--png", str(tmp_path / "scan_000.png")]) == 0
    z = np.load(out)
    assert str(z["mode"]) == "3d" and z["image"].shape == act.shape and z["loglik"].shape == (3,)
    assert bool(z["attenuation_corrected"]) and bool(z["randoms_corrected"])
    # Every prompt whose LOR crosses the FOV is used; the rebinned sinogram holds the same events.
    sino = SinogramGeometry.for_grid(SCANNER, FOV, 0.0)
    assert z["sinogram"].sum() == z["prompts"] == round(float(z["prompts_used_fraction"]) * len(c1))
    assert float(z["prompts_used_fraction"]) > 0.95 and sino.n_bins >= z["sinogram"].shape[2]
    img = z["image_unfiltered"]
    assert img[act > 0].sum() / img.sum() > 0.8
    assert float(z["psf_fwhm_mm"]) == 0.0
    # With the resolution model: recorded, and the same events reconstructed.
    psf_out = tmp_path / "scan_000_psf.npz"
    psf_args = [*opts, "--set", "reconstruction.psf_fwhm_mm=4", *args[:-1], str(psf_out)]
    assert main(["reconstruct", *psf_args]) == 0
    zp = np.load(psf_out)
    assert float(zp["psf_fwhm_mm"]) == 4.0 and zp["prompts"] == z["prompts"]
    assert not np.allclose(zp["image_unfiltered"], img)


@pytest.mark.gpu
def test_cuda_projection_and_reconstruction_equal_the_cpu():
    cpu = projector(dtype=torch.float32, subsets=2)
    gpu = projector(dtype=torch.float32, subsets=2, device="cuda")
    x_true = phantom(cpu.image_grid)
    x = torch.from_numpy(x_true).float()
    f_cpu, f_gpu = cpu.forward(x), gpu.forward(x.cuda()).cpu()
    np.testing.assert_allclose(f_gpu.numpy(), f_cpu.numpy(), rtol=1e-4, atol=1e-5 * float(f_cpu.max()))
    y, atten, randoms = (a.astype(np.float32) for a in noise_free_data(projector(subsets=2), x_true))
    r_cpu = reconstruct_3d(cpu, y, 5, attenuation=atten, randoms=randoms, show_progress=False)
    r_gpu = reconstruct_3d(gpu, y, 5, attenuation=atten, randoms=randoms, show_progress=False)
    np.testing.assert_allclose(r_gpu.image, r_cpu.image, rtol=1e-3, atol=1e-4 * r_cpu.image.max())
    np.testing.assert_allclose(r_gpu.loglik, r_cpu.loglik, rtol=1e-5)
    # With the resolution model (its matrix products on the GPU; config/gpu.yaml reconstructs there).
    from positrongan.recon.psf import GaussianPSF

    psf = GaussianPSF(cpu.image_grid.voxel_mm, 4.5)  # one model, its matrices on each image's device
    p_cpu = reconstruct_3d(cpu, y, 5, attenuation=atten, randoms=randoms, show_progress=False, psf=psf)
    p_gpu = reconstruct_3d(gpu, y, 5, attenuation=atten, randoms=randoms, show_progress=False, psf=psf)
    np.testing.assert_allclose(p_gpu.image, p_cpu.image, rtol=1e-3, atol=1e-4 * p_cpu.image.max())
    np.testing.assert_allclose(p_gpu.loglik, p_cpu.loglik, rtol=1e-5)
    assert not np.allclose(p_cpu.image, r_cpu.image)


def test_sampling_is_at_most_one_voxel_and_math_is_consistent():
    proj = projector()
    assert proj.steps == math.ceil(2 * proj.geometry.radius_mm / (FOV / GRID))
    assert proj.geometry.radius_mm == pytest.approx(SCANNER.inner_radius_mm)


def test_workflow_in_3d_mode_plans_no_system_model(tmp_path):
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for item in ("Snakefile", "workflow", "config", "envs"):
        src = root / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / item)
    snakemake = Path(sys.executable).parent / "snakemake"

    def plan(*extra):
        res = subprocess.run(
            [str(snakemake), "-n", "-p", "--cores", "2", *extra], cwd=tmp_path, capture_output=True, text=True
        )
        assert res.returncode == 0, res.stderr[-2000:]
        return res.stdout + res.stderr

    three_d = plan("--config", "reconstruction={mode: 3d}")
    assert "rule reconstruct_scan" in three_d and "--system-model" not in three_d
    assert "rule build_system_model" not in three_d
    two_d = plan("--config", "reconstruction={mode: 2d, psf_fwhm_mm: 0}")  # the PSF is 3d only
    assert "rule build_system_model" in two_d and "--system-model results/recon/system_model.npz" in two_d


def test_psf_is_a_self_adjoint_gaussian_of_the_asked_width():
    from positrongan.recon.psf import FWHM_PER_SIGMA, GaussianPSF

    voxel = (2.0, 1.0, 0.5)
    psf = GaussianPSF(voxel, 4.0)
    rng = np.random.default_rng(0)
    a, b = (torch.from_numpy(rng.random((15, 33, 61))) for _ in range(2))
    assert float((psf(a) * b).sum()) == pytest.approx(float((a * psf(b)).sum()), rel=1e-12)
    point = torch.zeros(15, 33, 61, dtype=torch.float64)
    point[7, 16, 30] = 1.0
    spread = psf(point)
    assert float(spread.sum()) == pytest.approx(1.0, abs=1e-12)  # counts kept away from the edges
    sigma_mm = 4.0 / FWHM_PER_SIGMA
    for axis, size in enumerate(voxel):  # the second moment along each axis is sigma^2
        profile = spread.sum(dim=[d for d in range(3) if d != axis]).numpy()
        t = (np.arange(profile.size) - profile.argmax()) * size
        assert np.sqrt((profile * t**2).sum()) == pytest.approx(sigma_mm, rel=0.02)
    with pytest.raises(ValueError, match="FWHM"):
        GaussianPSF(voxel, 0.0)


def test_psf_equals_scipys_zero_padded_convolution():
    # The blur as banded matrix products is the separable convolution with zero outside the image:
    # scipy.ndimage's, kernels longer than their axis included.
    from scipy import ndimage

    from positrongan.recon.psf import GaussianPSF

    psf = GaussianPSF((2.0, 1.0, 0.5), 2.5)
    assert [k.size for k in psf.kernels] == [5, 9, 15]  # x: longer than its 9 voxels
    image = np.random.default_rng(1).random((4, 6, 9))
    ref = image
    for axis, k in enumerate(psf.kernels):
        ref = ndimage.convolve1d(ref, k, axis=axis, mode="constant", cval=0.0)
    np.testing.assert_allclose(psf(torch.from_numpy(image)).numpy(), ref, rtol=1e-12, atol=1e-15)
    got32 = psf(torch.from_numpy(image).float())
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.numpy(), ref, rtol=1e-5)


def test_the_resolution_model_recovers_what_the_blur_took():
    # Noise-free data of a blurred system (A H x): reconstructed with H in the model, the hot rod
    # and the cold sphere come back; without it, the reconstruction keeps the blur.
    from positrongan.recon.psf import GaussianPSF

    proj = projector(subsets=4)
    x_true = phantom(proj.image_grid)
    psf = GaussianPSF(proj.image_grid.voxel_mm, 5.0)
    y, atten, randoms = noise_free_data(proj, psf(torch.from_numpy(x_true)).numpy())
    z, yy, xx = coords(proj.image_grid)
    rod = np.broadcast_to((((xx + 4) ** 2 + (yy - 2) ** 2) < 2.0**2) & (np.abs(z) < 7), x_true.shape)
    sphere = np.broadcast_to(((xx - 4) ** 2 + (yy + 1) ** 2 + z**2) < 3.0**2, x_true.shape)
    means = {}
    for name, model in (("psf", psf), ("none", None)):
        img = reconstruct_3d(proj, y, 40, attenuation=atten, randoms=randoms, show_progress=False, psf=model).image
        means[name] = float(img[rod].mean()), float(img[sphere].mean())
    (rod_psf, sphere_psf), (rod_none, sphere_none) = means["psf"], means["none"]
    assert abs(rod_psf - 2.0) < 0.5 * abs(rod_none - 2.0), means  # true rod 2, background 1
    assert sphere_psf < 0.6 * sphere_none, means  # true sphere 0


def test_mlem_with_the_resolution_model_is_monotone_and_conserves_counts():
    from positrongan.recon.psf import GaussianPSF

    proj = projector(subsets=1)
    x_true = phantom(proj.image_grid)
    psf = GaussianPSF(proj.image_grid.voxel_mm, 4.0)
    ybar, atten, _ = noise_free_data(proj, psf(torch.from_numpy(x_true)).numpy())
    y = np.random.default_rng(5).poisson(ybar * 0.2 / ybar.mean()).astype(np.float64)
    res = reconstruct_3d(proj, y, 8, attenuation=atten, show_progress=False, psf=psf)
    assert np.all(np.diff(res.loglik) >= -1e-9 * np.abs(res.loglik).max())
    forward = torch.from_numpy(atten) * proj.forward(psf(torch.from_numpy(res.image).double()))
    assert float(forward.sum()) == pytest.approx(y.sum(), rel=1e-4)


def test_the_method_label_names_the_resolution_model():
    from positrongan.recon.preview import method_label

    rec = {"iterations": 8, "subsets": 4}
    cfg = {"mode": "3d", "algorithm": "osem", "postfilter_fwhm_mm": 5.0, "psf_fwhm_mm": 4.5}
    assert method_label(rec, cfg) == "3D OSEM 8 it x 4 subsets, PSF 4.5 mm, 5 mm filter"
    assert "PSF" not in method_label(rec, {**cfg, "psf_fwhm_mm": 0.0})
