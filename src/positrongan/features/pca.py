"""Principal component analysis of image sets (paper eq. 4-5).

The data matrix Y (m samples x n pixels) is centred; the principal directions u maximise
u^T Sigma u under u^T u = 1 (eq. 5), i.e. they are the eigenvectors of the covariance
Sigma = Y^T Y / m and the explained variances are its eigenvalues. We obtain them from the
thin SVD of the centred data (Y = U S V^T, Sigma's eigenvalues = S^2 / m), which never forms
the n x n covariance (n = 4096 pixels at 64 px, more than the number of images).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PCA:
    """A fitted PCA.

    Attributes:
        components: (k, n) orthonormal principal directions, by decreasing variance.
        mean: (n,) the mean that was removed.
        explained_variance: (k,) eigenvalues of the covariance (divided by m, eq. 5).
        explained_variance_ratio: (k,) the same over the total variance.
    """

    components: np.ndarray
    mean: np.ndarray
    explained_variance: np.ndarray
    explained_variance_ratio: np.ndarray

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Project rows of x (m, n) onto the components. Returns (m, k) coefficients."""
        return (np.asarray(x, dtype=np.float64) - self.mean) @ self.components.T

    def inverse_transform(self, y: np.ndarray) -> np.ndarray:
        """Back from coefficients (m, k) to data space (m, n)."""
        return np.asarray(y, dtype=np.float64) @ self.components + self.mean


def fit_pca(x: np.ndarray, k: int) -> PCA:
    """Fit a rank-k PCA.

    Params:
        x: (m, n) data, one sample per row (images flattened).
        k: number of components; at most min(m, n).
    Returns:
        The fitted :class:`PCA` (float64 arrays).
    Raises:
        ValueError: k out of range, or fewer than two samples.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"PCA needs a (m, n) matrix with m >= 2 samples, got shape {x.shape}")
    m, n = x.shape
    if not 1 <= k <= min(m, n):
        raise ValueError(f"PCA components k={k} must be between 1 and min(samples, dims) = {min(m, n)}")
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    # Fix each direction's sign (largest |entry| positive) so the same data gives the same basis.
    signs = np.sign(vt[np.arange(vt.shape[0]), np.abs(vt).argmax(axis=1)])
    signs[signs == 0] = 1.0
    vt = vt * signs[:, None]
    var = s**2 / m
    total = var.sum()
    ratio = var / total if total > 0 else np.zeros_like(var)
    return PCA(components=vt[:k], mean=mean, explained_variance=var[:k], explained_variance_ratio=ratio[:k])
