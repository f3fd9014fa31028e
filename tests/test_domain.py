"""Domain-feature distances (metrics/domain.py) against known answers."""

import numpy as np
import pytest
from scipy import linalg

from positrongan.metrics.domain import defect_fractions, frechet_distance, kid, precision_recall


def _sqrtm_fd(a, b):
    # The textbook formula (Heusel et al. 2017) with scipy's matrix square root.
    mu_a, mu_b = a.mean(0), b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(sa @ sb).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sa + sb - 2 * covmean))


def test_frechet_identical_sets_is_zero():
    a = np.random.default_rng(0).normal(size=(200, 8))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_frechet_shifted_unit_gaussians_is_squared_mean_difference():
    rng = np.random.default_rng(1)
    shift = np.array([3.0, -1.0, 0.5, 0.0])
    a = rng.normal(size=(20000, 4))
    b = rng.normal(size=(20000, 4)) + shift
    # Identity covariances: the trace term vanishes up to O(D / N) sampling error.
    assert frechet_distance(a, b) == pytest.approx(float(shift @ shift), abs=0.05)


def test_frechet_matches_sqrtm_formula():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(size=(250, 6)) @ rng.normal(size=(6, 6)) + 1.0
    assert frechet_distance(a, b) == pytest.approx(_sqrtm_fd(a, b), rel=1e-6)


def _kid_brute(x, y):
    d = x.shape[1]
    k = lambda u, v: (u @ v / d + 1) ** 3  # noqa: E731
    n, m = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return kxx + kyy - 2 * kxy


def test_kid_is_the_unbiased_mmd_estimator():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(5, 3)) + 0.3
    assert kid(x, y) == pytest.approx(_kid_brute(x, y), rel=1e-10)


def test_kid_same_distribution_near_zero_shifted_positive():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(500, 8)), rng.normal(size=(500, 8))
    same = kid(a, b)
    far = kid(a, b + 1.0)
    assert abs(same) < 0.02
    assert far > 50 * abs(same) and far > 0.1
    # Subset estimates agree with the full estimate on average.
    sub = kid(a, b + 1.0, subsets=20, subset_size=200, rng=np.random.default_rng(0))
    assert sub == pytest.approx(far, rel=0.2)


def test_precision_recall_identical_and_disjoint():
    a = np.random.default_rng(5).normal(size=(100, 5))
    assert precision_recall(a, a, k=3) == (1.0, 1.0)
    assert precision_recall(a, a + 100.0, k=3) == (0.0, 0.0)


def test_precision_recall_subset_has_full_precision_partial_recall():
    # Fake images covering only one of two real clusters: every fake is realistic (precision 1),
    # half of the real set is missed (recall 0.5).
    rng = np.random.default_rng(6)
    real = np.concatenate([rng.normal(size=(100, 2)), rng.normal(size=(100, 2)) + 50])
    fake = real[:100] + 1e-9  # the first cluster, copied
    p, r = precision_recall(real, fake, k=3)
    assert p == 1.0
    assert r == 0.5


def test_defect_fractions():
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.7], [0.0, 0.0]])
    assert defect_fractions(scores, 0.5).tolist() == [0.5, 0.5]
    assert defect_fractions(scores, np.array([0.1, 0.75])).tolist() == [0.75, 0.25]


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="feature dimensions"):
        frechet_distance(np.zeros((3, 2)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="N >= 2"):
        kid(np.zeros((1, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="more than k"):
        precision_recall(np.zeros((3, 2)), np.zeros((10, 2)), k=3)
