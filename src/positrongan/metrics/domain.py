"""Distances between two sets of domain features (e.g. ``detect.detector_features``).

Pure numpy functions on (N, D) feature arrays. With the defect detector's pooled bottleneck
activations they are the "detector-feature Fréchet distance", "detector-feature KID" and
"detector-feature precision/recall": the Inception-free analogues of FID/KID, in a feature
space trained on positron images of the training scans only. They are not FID and must not be
called so.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist


def _as_features(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"{name} must be an (N, D) array with N >= 2, got shape {x.shape}")
    return x


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance of the Gaussians fitted to two feature sets.

    |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)), with unbiased covariances. With fewer
    samples than features, the trace of the matrix square root is the nuclear norm of
    X_a X_b^T / sqrt((n_a-1)(n_b-1)) (X centred features: the non-zero eigenvalues of S_a S_b are
    that matrix's squared singular values); otherwise it is computed from the D x D covariances
    through the symmetric S_a^(1/2) S_b S_a^(1/2). Both are exact and free of the imaginary parts
    ``scipy.linalg.sqrtm`` produces when a covariance is singular.

    Params:
        a, b: (N_a, D), (N_b, D) features, N >= 2.
    Returns:
        The distance (>= 0 up to rounding).
    """
    a, b = _as_features(a, "a"), _as_features(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    xa, xb = a - a.mean(0), b - b.mean(0)
    na, nb = len(a) - 1, len(b) - 1
    tr_cov = float((xa * xa).sum()) / na + float((xb * xb).sum()) / nb
    if min(len(a), len(b)) <= a.shape[1]:
        tr_sqrt = float(np.linalg.svd(xa @ xb.T, compute_uv=False).sum()) / np.sqrt(na * nb)
    else:
        # More samples than features: the same trace from the D x D covariances, as the sum of
        # the square roots of the eigenvalues of the PSD matrix S_a^(1/2) S_b S_a^(1/2).
        sa, sb = xa.T @ xa / na, xb.T @ xb / nb
        w, v = np.linalg.eigh(sa)
        root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        ev = np.linalg.eigvalsh(root @ sb @ root)
        tr_sqrt = float(np.sqrt(np.clip(ev, 0, None)).sum())
    diff = a.mean(0) - b.mean(0)
    return float(max(0.0, diff @ diff + tr_cov - 2.0 * tr_sqrt))


def kid(
    a: np.ndarray,
    b: np.ndarray,
    subsets: int = 0,
    subset_size: int = 1000,
    rng: np.random.Generator | None = None,
) -> float:
    """Kernel distance (Binkowski et al. 2018): unbiased MMD^2 with k(x, y) = (x.y / D + 1)^3.

    Params:
        a, b: (N, D), (M, D) features, N, M >= 2.
        subsets: 0 for one estimate on the full sets; otherwise the mean over this many random
            subsets of ``subset_size`` (capped at min(N, M)) drawn without replacement from ``rng``.
        subset_size: images per subset.
        rng: numpy Generator (required when ``subsets`` > 0).
    Returns:
        The unbiased MMD^2 estimate (can be slightly negative for identical distributions).
    """
    a, b = _as_features(a, "a"), _as_features(b, "b")
    d = a.shape[1]

    def mmd(x: np.ndarray, y: np.ndarray) -> float:
        n, m = len(x), len(y)
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        return float(
            (kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()
        )

    if subsets <= 0:
        return mmd(a, b)
    if rng is None:
        raise ValueError("kid with subsets needs an rng")
    m = min(subset_size, len(a), len(b))
    vals = [
        mmd(a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)]) for _ in range(subsets)
    ]
    return float(np.mean(vals))


def _knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance of each point to its k-th nearest neighbour in the same set (itself excluded)."""
    dist = cdist(x, x)
    return np.sort(dist, axis=1)[:, k]  # column 0 is the point itself


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN manifolds.

    Each set's manifold is the union of balls around its points, of radius the distance to the
    point's k-th nearest neighbour in its own set. Precision: the fraction of ``fake`` inside
    the real manifold (fidelity); recall: the fraction of ``real`` inside the fake manifold
    (coverage).

    Params:
        real, fake: (N, D), (M, D) features, each with more than ``k`` points.
        k: neighbourhood size (the paper uses 3).
    Returns:
        (precision, recall) in [0, 1].
    """
    real, fake = _as_features(real, "real"), _as_features(fake, "fake")
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"precision_recall needs more than k={k} points in each set")
    r_real, r_fake = _knn_radii(real, k), _knn_radii(fake, k)
    d = cdist(fake, real)  # (M, N)
    precision = float((d <= r_real[None, :]).any(1).mean())
    recall = float((d.T <= r_fake[None, :]).any(1).mean())
    return precision, recall


def defect_fractions(scores: np.ndarray, threshold: float | np.ndarray) -> np.ndarray:
    """Per-type fraction of images in which the detector finds the type.

    Params:
        scores: (N, T) per-type scores (``detect.detector_scores``).
        threshold: a scalar or (T,) per-type thresholds; a type is found when its score exceeds it
            (``results/detect/detector.pt`` stores the thresholds chosen on the validation scans).
    Returns:
        (T,) fractions in [0, 1].
    """
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 2 or len(scores) == 0:
        raise ValueError(f"scores must be a non-empty (N, T) array, got shape {scores.shape}")
    thr = np.broadcast_to(np.asarray(threshold, np.float64), (scores.shape[1],))
    return (scores > thr[None, :]).mean(0)
