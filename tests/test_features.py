"""PCA against the closed form (eigen-decomposition of the covariance), PCANet's filters and
histograms, and the extract-features command."""

import numpy as np
import pytest

from helpers import rings
from positrongan.cli import main
from positrongan.features.pca import fit_pca
from positrongan.features.pcanet import fit_pcanet
from positrongan.io import load_npz, save_npz


def test_pca_matches_covariance_eigendecomposition():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 8)) @ rng.normal(size=(8, 8)) + 3.0
    pca = fit_pca(x, 5)
    cov = np.cov(x, rowvar=False, bias=True)  # (1/m) sum y y^T of the centred data, eq. 5
    vals, vecs = np.linalg.eigh(cov)
    vals, vecs = vals[::-1], vecs[:, ::-1]
    np.testing.assert_allclose(pca.explained_variance, vals[:5], rtol=1e-10)
    np.testing.assert_allclose(pca.explained_variance_ratio, vals[:5] / vals.sum(), rtol=1e-10)
    # Same directions up to sign, and orthonormal.
    np.testing.assert_allclose(np.abs(pca.components @ vecs[:, :5]), np.eye(5), atol=1e-8)
    np.testing.assert_allclose(pca.components @ pca.components.T, np.eye(5), atol=1e-12)
    # The variance of the projections is the eigenvalue (the maximised quantity of eq. 5).
    np.testing.assert_allclose(pca.transform(x).var(axis=0), vals[:5], rtol=1e-10)


def test_pca_reconstructs_a_rank_k_set_exactly():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 3)) @ rng.normal(size=(3, 50)) + rng.normal(size=50)
    pca = fit_pca(x, 3)
    np.testing.assert_allclose(pca.inverse_transform(pca.transform(x)), x, atol=1e-9)
    assert pca.explained_variance_ratio.sum() == pytest.approx(1.0, abs=1e-12)


def test_pca_rejects_bad_rank():
    with pytest.raises(ValueError, match="components"):
        fit_pca(np.zeros((4, 3)), 5)
    with pytest.raises(ValueError, match="m >= 2"):
        fit_pca(np.zeros((1, 3)), 1)


def test_pcanet_filters_are_orthonormal_and_histograms_count_pixels():
    images = rings(6, 32)
    net = fit_pcanet(images, (4, 3), patch=5, block=8)
    f1 = net.filters1.reshape(4, -1)
    f2 = net.filters2.reshape(3, -1)
    np.testing.assert_allclose(f1 @ f1.T, np.eye(4), atol=1e-5)
    np.testing.assert_allclose(f2 @ f2.T, np.eye(3), atol=1e-5)
    feats = net.features(images)
    bins = 2**3
    assert feats.shape == (6, 4 * (32 // 8) ** 2 * bins)
    # Every block histogram counts each of its b*b pixels exactly once.
    np.testing.assert_array_equal(feats.reshape(6, -1, bins).sum(axis=2), 64)


def test_pcanet_filters_learn_the_dominant_patch_structure():
    # Vertical stripes only vary along x: the first stage-1 filter must vary along x only.
    x = np.tile(np.sin(np.arange(32) * 0.8), (32, 1))[None].repeat(3, axis=0).astype(np.float32)
    net = fit_pcanet(x, (2, 2), patch=5, block=8)
    f = net.filters1[0]
    # Only the zero-padded border patches vary along y, so the filter is almost constant in y.
    assert np.abs(f - f.mean(axis=0)).max() < 0.1 * np.abs(f).max()
    assert np.abs(f - f.mean(axis=1, keepdims=True)).max() > 0.5 * np.abs(f).max()


def _dataset(tmp_path, n=20, size=32):
    path = tmp_path / "positron.npz"
    images = rings(n, size)
    split = np.array(["train"] * (n - 6) + ["val"] * 3 + ["test"] * 3)
    save_npz(path, images=images, split=split)
    return path, images[split == "train"]


@pytest.mark.parametrize("method", ["pca", "pcanet"])
def test_extract_features_command_writes_the_contract(tmp_path, method):
    data, train = _dataset(tmp_path)
    out = tmp_path / "features.npz"
    sets = ["--set", f"features.method={method}", "--set", "features.components=6", "--set", "features.pcanet_block=8"]
    assert main(["extract-features", "--dataset", str(data), "--out", str(out), *sets]) == 0
    feats = load_npz(
        out, required=("memory", "components", "mean", "explained_variance", "explained_variance_ratio", "method")
    )
    assert feats["memory"].shape == (len(train), 6)
    assert str(feats["method"]) == method
    if method == "pca":
        flat = train.reshape(len(train), -1)
        np.testing.assert_allclose(feats["memory"], (flat - feats["mean"]) @ feats["components"].T, atol=1e-4)
        assert np.all(np.diff(feats["explained_variance"]) <= 1e-6)


def test_extract_features_bad_inputs_give_one_line(tmp_path, capsys):
    assert main(["extract-features", "--dataset", str(tmp_path / "none.npz"), "--out", str(tmp_path / "f.npz")]) == 2
    assert "file not found" in capsys.readouterr().err
    data, _ = _dataset(tmp_path)
    code = main(
        [
            "extract-features",
            "--dataset",
            str(data),
            "--out",
            str(tmp_path / "f.npz"),
            "--set",
            "features.method=pcanet",
            "--set",
            "features.pcanet_block=64",
        ]
    )
    assert code == 2
    assert "features.pcanet_block" in capsys.readouterr().err
    assert not (tmp_path / "f.npz").exists()
