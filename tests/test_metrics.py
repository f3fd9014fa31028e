"""Evaluation metrics: known answers (identical images, a set against itself, a pure mean
shift), agreement with the reference libraries, and the honest FID/KID fallback."""

import logging

import numpy as np
import pytest
import torch
from pytorch_msssim import ms_ssim as reference_ms_ssim

from positrongan import metrics
from positrongan.config import derived_seed, validate
from positrongan.errors import ArtifactError, ConfigError
from positrongan.io import save_npz
from positrongan.metrics import fid, swd
from positrongan.metrics.inputs import load_real, load_samples
from positrongan.metrics.memorisation import nearest_train_msssim
from positrongan.metrics.msssim import MSSSIMSettings, mean_pairwise, ms_ssim, ms_ssim_matrix

EV = validate({})["evaluation"]


def tubes(rng, n, size, noise=0.05, shift=0.0):
    """Noisy elliptical discs: a stand-in for positron images of a tube section."""
    yy, xx = np.mgrid[:size, :size] / size
    out = np.empty((n, size, size), np.float32)
    for i in range(n):
        a, b = rng.uniform(0.25, 0.35), rng.uniform(0.18, 0.28)
        disc = ((xx - 0.5) / a) ** 2 + ((yy - 0.5 + shift) / b) ** 2 < 1
        out[i] = 0.8 * disc + rng.uniform(0, 0.1) + noise * rng.standard_normal((size, size))
    return np.clip(out, 0, 1)


def stripes(rng, n, size):
    xx = np.arange(size)[None, :].repeat(size, 0)
    out = [0.5 + 0.5 * np.sin(rng.uniform(0.3, 0.9) * xx + rng.uniform(0, 6)) for _ in range(n)]
    return np.clip(np.array(out) + 0.05 * rng.standard_normal((n, size, size)), 0, 1).astype(np.float32)


# ---------------------------------------------------------------- MS-SSIM


@pytest.mark.parametrize("size", [32, 64])
def test_msssim_of_identical_images_is_one(size):
    rng = np.random.default_rng(0)
    a = tubes(rng, 4, size)
    np.testing.assert_allclose(ms_ssim(a, a), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.diag(ms_ssim_matrix(a, a)), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    "size,settings",
    [
        (112, MSSSIMSettings(3, 7, 1.5)),  # our default settings (pytorch-msssim asserts size > 96 for them)
        (64, MSSSIMSettings(3, 3, 1.5)),
        (65, MSSSIMSettings(2, 5, 1.0)),  # odd side: padding in the 2x2 pooling
        (176, MSSSIMSettings(5, 11, 1.5)),  # pytorch-msssim's own defaults
    ],
)
def test_msssim_matches_pytorch_msssim(size, settings):
    rng = np.random.default_rng(1)
    a = rng.random((4, size, size)).astype(np.float32)
    b = np.clip(a + 0.2 * rng.standard_normal(a.shape), 0, 1).astype(np.float32)
    ref = reference_ms_ssim(
        torch.from_numpy(a)[:, None],
        torch.from_numpy(b)[:, None],
        data_range=1.0,
        size_average=False,
        win_size=settings.window,
        win_sigma=settings.sigma,
        weights=list(settings.weights),
    ).numpy()
    np.testing.assert_allclose(ms_ssim(a, b, settings), ref, atol=2e-5)
    np.testing.assert_allclose(ms_ssim_matrix(a, b, settings), ms_ssim_matrix(a, b, settings))
    # The all-pairs fast path agrees with the pairwise one.
    full = ms_ssim_matrix(a, b, settings, max_elements=size * size * 3)  # 3 columns per block
    for i in range(len(a)):
        np.testing.assert_allclose(full[i], ms_ssim(np.repeat(a[i : i + 1], len(b), 0), b, settings), atol=1e-5)


def test_default_weights_are_wangs_renormalised():
    w = MSSSIMSettings(3, 7, 1.5).weights
    assert sum(w) == pytest.approx(1.0)
    assert w[1] / w[0] == pytest.approx(0.2856 / 0.0448)


def test_msssim_settings_too_coarse_for_the_image_name_the_key():
    with pytest.raises(ConfigError, match="evaluation.msssim_scales"):
        ms_ssim(np.zeros((1, 32, 32)), np.zeros((1, 32, 32)), MSSSIMSettings(4, 7, 1.5))
    MSSSIMSettings(3, 7, 1.5).check(32)  # the default is valid at the smallest dataset size


def test_mean_pairwise_diversity():
    rng = np.random.default_rng(2)
    same = np.repeat(tubes(rng, 1, 32), 6, axis=0)
    value, pairs = mean_pairwise(same, 100, rng)
    assert value == pytest.approx(1.0, abs=1e-5)
    assert pairs == 15  # all distinct pairs of 6 images when fewer than asked
    noise = rng.random((40, 32, 32)).astype(np.float32)
    value, pairs = mean_pairwise(noise, 50, rng)
    assert pairs == 50 and value < 0.1  # independent noise images share no structure


def test_nearest_train_finds_the_copy():
    rng = np.random.default_rng(3)
    train = tubes(rng, 10, 32)
    fresh = tubes(rng, 3, 32)
    best, idx = nearest_train_msssim(np.concatenate([train[[7, 2]], fresh]), train, MSSSIMSettings())
    assert list(idx[:2]) == [7, 2]
    np.testing.assert_allclose(best[:2], 1.0, atol=1e-5)
    assert (best[2:] < 0.999).all()


# ---------------------------------------------------------------- FID and KID


def test_frechet_distance_of_a_set_with_itself_is_zero():
    rng = np.random.default_rng(4)
    act = rng.standard_normal((200, 16))
    assert fid.frechet_distance(act, act) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("n_a,n_b,dim", [(300, 200, 12), (40, 25, 64)])  # second: N < D, singular covariances
def test_frechet_distance_matches_pytorch_fid(n_a, n_b, dim):
    import warnings

    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(n_a)
    mix = rng.standard_normal((dim, dim)) / np.sqrt(dim)
    a = np.maximum(rng.standard_normal((n_a, dim)) @ mix, 0)
    b = np.maximum(rng.standard_normal((n_b, dim)) @ mix + 0.3, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # scipy's sqrtm `disp`, passed by pytorch-fid
        ref = calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert fid.frechet_distance(a, b) == pytest.approx(ref, rel=1e-5, abs=1e-8)


def test_frechet_distance_of_a_mean_shift_is_its_squared_norm():
    rng = np.random.default_rng(5)
    act = rng.standard_normal((300, 8))
    shift = np.arange(8) * 0.1
    assert fid.frechet_distance(act, act + shift) == pytest.approx(float(shift @ shift), rel=1e-6)


def test_kid_is_the_unbiased_polynomial_mmd():
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((7, 4)), rng.standard_normal((7, 4)) + 0.5

    def k(a, b):
        return (a @ b / 4 + 1) ** 3

    m = 7
    brute = (
        sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
        + sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
        - 2 * sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2
    )
    kid, std, size = fid.kernel_inception_distance(x, y, subsets=3, subset_size=50, rng=rng)
    assert size == 7 and std == pytest.approx(0.0, abs=1e-12)  # each subset is the whole set
    assert kid == pytest.approx(brute, rel=1e-10)
    same = rng.standard_normal((400, 4))
    kid_same, std_same, _ = fid.kernel_inception_distance(same[:200], same[200:], 20, 100, rng)
    assert abs(kid_same) < 3 * std_same + 1e-3  # unbiased: no offset for one distribution


class FakeInception(torch.nn.Module):
    """Stands in for pytorch-fid's InceptionV3 (as pytorch-fid's own tests mock it): same call
    convention, 16-d features from a fixed random projection of an 8x8 pooled image."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3 * 64, 16)
        torch.nn.init.normal_(self.proj.weight, generator=torch.Generator().manual_seed(0))

    def forward(self, x):
        assert x.shape[1] == 3 and torch.equal(x[:, 0], x[:, 2])  # grey replicated to RGB
        pooled = torch.nn.functional.adaptive_avg_pool2d(x, 8).flatten(1)
        return [self.proj(pooled)[:, :, None, None]]


def _context(rng, size=32, ev=EV):
    return metrics.Context(
        test=tubes(rng, 40, size),
        train=tubes(rng, 30, size),
        ev=ev,
        device="cpu",
        seed=lambda *k: derived_seed({"seed": 0}, *k),
    )


def test_fid_path_with_mocked_inception_gives_finite_numbers(monkeypatch):
    monkeypatch.setattr(fid, "weights_status", lambda: None)
    monkeypatch.setattr(fid, "load_inception", lambda device: FakeInception().eval())
    rng = np.random.default_rng(7)
    ctx = _context(rng)
    gen = tubes(rng, 50, 32, shift=0.15)
    row = metrics.evaluate(metrics.Subject("dcgan", gen, gen), ctx, ["fid_kid"])
    assert row["fid_status"] == "ok"
    assert np.isfinite(row["fid"]) and row["fid"] > 0 and np.isfinite(row["kid"])
    assert row["kid_subset_size"] == 40
    itself = metrics.evaluate(metrics.Subject("real", ctx.test, ctx.test), ctx, ["fid_kid"])
    assert itself["fid"] == pytest.approx(0.0, abs=1e-4)
    assert itself["fid"] < row["fid"]


def test_missing_inception_weights_give_unavailable_and_no_number(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(fid, "load_inception", lambda device: pytest.fail("must not build Inception"))
    rng = np.random.default_rng(8)
    ctx = _context(rng)
    with caplog.at_level(logging.WARNING):
        row = metrics.evaluate(metrics.Subject("ours", ctx.test, ctx.test), ctx, ["fid_kid"])
    assert row["fid_status"] == "unavailable: Inception weights missing"
    assert row["fid"] is None and row["kid"] is None
    expected = tmp_path / "hub" / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth"
    assert str(expected) in caplog.text


def test_other_weights_under_the_fid_name_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    path = fid.weights_path()
    path.parent.mkdir(parents=True)
    torch.save({"w": torch.zeros(3)}, path)
    assert fid.weights_status() == fid.UNAVAILABLE_HASH


def test_load_inception_reads_the_local_file_only(tmp_path, monkeypatch):
    import pytorch_fid.inception as pfi

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    fid.weights_path().parent.mkdir(parents=True)
    torch.save({"w": torch.arange(3.0)}, fid.weights_path())
    seen = {}

    class Recorder(torch.nn.Module):
        BLOCK_INDEX_BY_DIM = pfi.InceptionV3.BLOCK_INDEX_BY_DIM

        def __init__(self, blocks):
            super().__init__()
            seen["blocks"] = blocks
            seen["state"] = pfi.load_state_dict_from_url(pfi.FID_WEIGHTS_URL, progress=True)

    monkeypatch.setattr(pfi, "InceptionV3", Recorder)
    original = pfi.load_state_dict_from_url
    fid.load_inception("cpu")
    assert seen["blocks"] == [3]
    assert torch.equal(seen["state"]["w"], torch.arange(3.0))
    assert pfi.load_state_dict_from_url is original  # restored afterwards


def test_fid_disabled_by_config():
    rng = np.random.default_rng(9)
    ctx = _context(rng, ev={**EV, "fid": False})
    row = metrics.evaluate(metrics.Subject("ours", ctx.test, ctx.test), ctx, ["fid_kid"])
    assert row["fid"] is None and row["fid_status"].startswith("disabled")


# ---------------------------------------------------------------- SWD


def test_swd_separates_distributions_but_not_halves_of_one():
    rng = np.random.default_rng(10)
    ev = {**EV, "swd_patches": 2048}
    a = tubes(rng, 160, 32)
    b = stripes(rng, 80, 32)
    halves = swd.sliced_wasserstein(a[:80], a[80:], ev, seed=1)["swd"]
    different = swd.sliced_wasserstein(a[:80], b, ev, seed=1)
    assert different["swd"] > 3 * halves
    assert set(different["swd_levels"]) == {32, 16}


def test_laplacian_pyramid_reconstructs_the_image():
    rng = np.random.default_rng(11)
    img = rng.random((2, 32, 32)).astype(np.float32)
    levels = swd.laplacian_pyramid(img, 8)
    assert [lv.shape[-1] for lv in levels] == [32, 16, 8]
    # Collapse: upsample the coarse level the same way and add the band-pass details back.
    x = torch.from_numpy(levels[-1])
    for detail in reversed(levels[:-1]):
        up = torch.zeros(x.shape[0], 2 * x.shape[1], 2 * x.shape[2])
        up[:, ::2, ::2] = x
        x = torch.from_numpy(detail) + 4.0 * swd._blur(up)
    np.testing.assert_allclose(x.numpy(), img, atol=1e-5)


def test_swd_settings_are_checked():
    with pytest.raises(ConfigError, match="evaluation.swd_min_size"):
        swd.check_settings(16, {**EV, "swd_min_size": 32})


def test_reference_statistics_are_pytorch_fid_reference_stats(monkeypatch):
    # eval/reference.npz holds the test set's Inception statistics in pytorch-fid's format
    # (mu, sigma): pytorch-fid's own distance from them equals the FID of the table.
    from pytorch_fid.fid_score import calculate_frechet_distance

    from positrongan.metrics.evaluation import reference_statistics

    monkeypatch.setattr(fid, "weights_status", lambda: None)
    monkeypatch.setattr(fid, "load_inception", lambda device: FakeInception().eval())
    rng = np.random.default_rng(21)
    ctx = _context(rng)
    gen = tubes(rng, 50, 32, shift=0.15)
    row = metrics.evaluate(metrics.Subject("dcgan", gen, gen), ctx)
    real = metrics.evaluate(metrics.Subject("real", ctx.test, ctx.train), ctx)
    ref = reference_statistics(ctx.train, ctx.test, real, ctx)
    act = fid.activations(ctx.cache["inception"], gen, EV["batch_size"], "cpu")
    theirs = calculate_frechet_distance(act.mean(0), np.cov(act, rowvar=False), ref["mu"], ref["sigma"])
    assert theirs == pytest.approx(row["fid"], rel=1e-4)
    assert ref["mu"].shape == (16,) and ref["sigma"].shape == (16, 16)
    assert int(ref["n_test"]) == 40 and str(ref["fid_status"]) == "ok"
    assert float(ref["msssim"]) == real["msssim"] and float(ref["swd_train_test"]) == real["swd"]
    np.testing.assert_allclose(ref["swd_train_test_levels"].mean(), real["swd"], rtol=1e-12)


# ---------------------------------------------------------------- inputs


def _dataset(path, rng, size=32, n_test=5):
    images = tubes(rng, 10 + n_test, size)
    split = np.array(["train"] * 10 + ["test"] * n_test)
    save_npz(path, images=images, split=split)


def test_missing_samples_file_is_named(tmp_path):
    with pytest.raises(ArtifactError, match="dcgan.npz"):
        load_samples([tmp_path / "dcgan.npz"], ["dcgan"], 32, 256)


def test_samples_must_cover_training_methods(tmp_path):
    rng = np.random.default_rng(12)
    save_npz(tmp_path / "ours.npz", images=tubes(rng, 4, 32), method=np.array("ours"))
    with pytest.raises(ConfigError, match="training.methods"):
        load_samples([tmp_path / "ours.npz"], ["ours", "vae"], 32, 256)
    with pytest.raises(ArtifactError, match="64 px"):
        save_npz(tmp_path / "vae.npz", images=tubes(rng, 4, 64), method=np.array("vae"))
        load_samples([tmp_path / "ours.npz", tmp_path / "vae.npz"], ["ours", "vae"], 32, 256)
    sets = load_samples([tmp_path / "ours.npz"], ["ours"], 32, 3)
    assert len(sets[0].images) == 3 and sets[0].train_seconds is None


def test_samples_out_of_range_are_refused(tmp_path):
    save_npz(tmp_path / "vae.npz", images=np.full((4, 32, 32), 2.0, np.float32), method=np.array("vae"))
    with pytest.raises(ArtifactError, match=r"\[0, 1\]"):
        load_samples([tmp_path / "vae.npz"], ["vae"], 32, 256)


def test_dataset_without_test_images_is_refused(tmp_path):
    _dataset(tmp_path / "d.npz", np.random.default_rng(13), n_test=1)
    with pytest.raises(ArtifactError, match="test image"):
        load_real(tmp_path / "d.npz")
    _dataset(tmp_path / "ok.npz", np.random.default_rng(13), n_test=4)
    train, test = load_real(tmp_path / "ok.npz")
    assert train.shape == (10, 32, 32) and test.shape == (4, 32, 32)


def test_swd_projections_are_shared_by_every_row(monkeypatch):
    """One set of projections for every method, seed and real floor (the audit found a
    per-method seed): record the projection seed of every call to POT."""
    import ot

    seen = []
    real_swd = ot.sliced_wasserstein_distance

    def spy(a, b, n_projections, p, seed):
        seen.append(seed)
        return real_swd(a, b, n_projections=n_projections, p=p, seed=seed)

    monkeypatch.setattr(swd.ot, "sliced_wasserstein_distance", spy)
    rng = np.random.default_rng(0)
    test, train = rng.random((10, 32, 32)), rng.random((12, 32, 32))
    ev = {**EV, "swd_patches": 64}
    ctx = metrics.Context(test=test, train=train, ev=ev, device="cpu", seed=lambda *k: derived_seed({"seed": 1}, *k))
    subjects = [
        metrics.Subject("ours", train[:6], train[:6]),
        metrics.Subject("ours", train[:6], train[:6], seed=1),
        metrics.Subject("vae", train[6:], train[6:]),
        metrics.Subject("real", test, train),
        metrics.Subject("real_split", test[:5], test[:5], reference=test[5:]),
    ]
    values = [metrics.evaluate(s, ctx, ["swd"])["swd"] for s in subjects]
    assert len(seen) == 2 * len(subjects)  # two pyramid levels per row
    assert len(set(seen)) == 1, f"rows used different SWD projections: {seen}"
    assert values[0] != values[1]  # the patches are still drawn per (row, seed)


def test_c2st_is_chance_for_one_distribution_and_one_for_two():
    from positrongan.metrics.c2st import c2st_accuracy

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32] / 32

    def blobs(n):
        cx, cy = rng.uniform(0.3, 0.7, (2, n, 1, 1))
        return (np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.02) + 0.05 * rng.random((n, 32, 32))).clip(0, 1)

    def stripes(n):
        phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
        return (0.5 + 0.4 * np.sin(12 * xx + phase) + 0.05 * rng.random((n, 32, 32))).clip(0, 1)

    same, n = c2st_accuracy(blobs(200), blobs(200), epochs=10, seed=0)
    assert n == 200 and abs(same - 0.5) < 0.1
    different, _ = c2st_accuracy(blobs(150), stripes(300), epochs=10, seed=0)
    assert different > 0.95
    # Seeded: the same inputs give the same accuracy.
    a, b = blobs(40), stripes(40)
    assert c2st_accuracy(a, b, 2, seed=3) == c2st_accuracy(a, b, 2, seed=3)


def test_detector_feature_metrics_know_identical_and_shifted_sets():
    from positrongan.detect.train import TYPES
    from positrongan.detect.unet import SmallUNet
    from positrongan.metrics.evaluation import DomainMetrics

    torch.manual_seed(0)
    model = SmallUNet(len(TYPES) + 1, width=4, levels=2).eval()
    model.topk, model.types, model.thresholds = 4, TYPES, np.full(len(TYPES), 0.5)
    rng = np.random.default_rng(0)
    real = rng.random((40, 32, 32)).astype(np.float32) * 0.5
    dm = DomainMetrics(model, seed=1)
    same = dm.row(real, real)
    # A set against itself: zero Fréchet distance, every point inside the other's manifold, the
    # same defect fractions.
    assert abs(same["det_fd"]) < 1e-6 and same["det_precision"] == 1.0 and same["det_recall"] == 1.0
    assert all(same[f"defect_{t}"] == same[f"defect_{t}_ref"] for t in TYPES)
    shifted = dm.row(real + 0.5, real)
    assert shifted["det_fd"] > 1e-3 and shifted["det_kid"] > same["det_kid"]
