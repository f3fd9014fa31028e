"""PCANet features (Chan et al. 2015, "PCANet: a simple deep learning baseline"): the
paper's "CNN feature extractor" of §3.3 — two convolution stages whose filters are PCA
eigenvectors of mean-removed image patches, then binary hashing and block histograms.

Stage 1 learns L1 filters from all k x k patches of the images; stage 2 learns L2 filters
from the patches of the L1 stage-1 maps. Each stage-1 map l gives L2 stage-2 maps, which
are binarised (> 0) and packed into an integer map T_l = sum_j 2^j H(O_lj) in [0, 2^L2);
the feature vector is the concatenation of the 2^L2-bin histograms of T_l over
non-overlapping b x b blocks, for every l. Its dimension is L1 * (S/b)^2 * 2^L2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .pca import fit_pca


@dataclass
class PCANet:
    """Learned PCANet filters.

    Attributes:
        filters1: (L1, k, k) stage-1 filters.
        filters2: (L2, k, k) stage-2 filters.
        block: histogram block side in pixels.
    """

    filters1: np.ndarray
    filters2: np.ndarray
    block: int

    @property
    def patch(self) -> int:
        return self.filters1.shape[-1]

    def features(self, images: np.ndarray, batch: int = 64) -> np.ndarray:
        """Block-histogram features of images (m, S, S). Returns (m, L1 * (S/b)^2 * 2^L2) float32."""
        out = []
        for start in range(0, len(images), batch):
            x = torch.as_tensor(np.asarray(images[start : start + batch], dtype=np.float32))[:, None]
            out.append(_histograms(x, self.filters1, self.filters2, self.block))
        return np.concatenate(out, axis=0)


def _conv(x: torch.Tensor, filters: np.ndarray) -> torch.Tensor:
    # "Same" correlation with zero padding; x (B, 1, S, S) -> (B, L, S, S).
    w = torch.as_tensor(filters, dtype=torch.float32)[:, None]
    k = filters.shape[-1]
    lo, hi = (k - 1) // 2, k // 2
    return F.conv2d(F.pad(x, (lo, hi, lo, hi)), w)


def _patches(x: torch.Tensor, k: int) -> torch.Tensor:
    # Every k x k patch of (B, 1, S, S) (same padding), each with its own mean removed as in
    # PCANet, as rows of a (B*S*S, k*k) matrix.
    lo, hi = (k - 1) // 2, k // 2
    cols = F.unfold(F.pad(x, (lo, hi, lo, hi)), k)  # (B, k*k, S*S)
    rows = cols.transpose(1, 2).reshape(-1, k * k)
    return rows - rows.mean(dim=1, keepdim=True)


def _filters(rows: torch.Tensor, count: int, k: int) -> np.ndarray:
    # Leading eigenvectors of the (uncentred) patch scatter matrix X^T X: PCA filters.
    r = rows.double()
    scatter = (r.T @ r).numpy()
    vals, vecs = np.linalg.eigh(scatter)
    order = np.argsort(vals)[::-1][:count]
    filt = vecs[:, order].T
    signs = np.sign(filt[np.arange(count), np.abs(filt).argmax(axis=1)])
    signs[signs == 0] = 1.0
    return (filt * signs[:, None]).reshape(count, k, k).astype(np.float32)


def _histograms(x: torch.Tensor, f1: np.ndarray, f2: np.ndarray, block: int) -> np.ndarray:
    b, _, s, _ = x.shape
    l1, l2 = len(f1), len(f2)
    stage1 = _conv(x, f1)  # (B, L1, S, S)
    stage2 = _conv(stage1.reshape(b * l1, 1, s, s), f2)  # (B*L1, L2, S, S)
    weights = (2 ** torch.arange(l2, dtype=torch.int64)).view(1, l2, 1, 1)
    codes = ((stage2 > 0).long() * weights).sum(dim=1)  # (B*L1, S, S) in [0, 2^L2)
    nb = s // block
    codes = codes[:, : nb * block, : nb * block]
    codes = codes.reshape(b * l1, nb, block, nb, block).permute(0, 1, 3, 2, 4).reshape(-1, block * block)
    bins = 2**l2
    # One bincount for all blocks: offset each block's codes into its own range of bins.
    offset = torch.arange(codes.shape[0], dtype=torch.int64)[:, None] * bins
    hist = torch.bincount((codes + offset).reshape(-1), minlength=codes.shape[0] * bins)
    return hist.reshape(b, l1 * nb * nb * bins).float().numpy()


def fit_pcanet(
    images: np.ndarray,
    filters: tuple[int, int],
    patch: int,
    block: int,
    max_patches: int = 200_000,
    seed: int = 0,
) -> PCANet:
    """Learn the two PCANet filter banks from images.

    Params:
        images: (m, S, S) training images.
        filters: (L1, L2) filters per stage; each at most patch^2.
        patch: filter side k in pixels.
        block: histogram block side (at most S).
        max_patches: patches used per stage (a seeded random subset when there are more).
        seed: seed of that subset.
    Returns:
        The :class:`PCANet`.
    Raises:
        ValueError: filters, patch or block out of range.
    """
    images = np.asarray(images, dtype=np.float32)
    s = images.shape[-1]
    l1, l2 = filters
    if max(l1, l2) > patch * patch:
        raise ValueError(f"PCANet filters {filters} exceed the patch dimension {patch}x{patch}")
    if not 2 <= block <= s:
        raise ValueError(f"PCANet block {block} must be between 2 and the image size {s}")
    if l2 > 16:
        raise ValueError(f"PCANet stage-2 filters {l2} > 16 would give more than 2^16 histogram bins")
    rng = np.random.default_rng(seed)
    x = torch.as_tensor(images)[:, None]

    def subset(rows: torch.Tensor) -> torch.Tensor:
        if len(rows) <= max_patches:
            return rows
        return rows[torch.as_tensor(rng.choice(len(rows), max_patches, replace=False))]

    f1 = _filters(subset(_patches(x, patch)), l1, patch)
    stage1 = _conv(x, f1).reshape(-1, 1, s, s)
    f2 = _filters(subset(_patches(stage1, patch)), l2, patch)
    return PCANet(filters1=f1, filters2=f2, block=block)


def pcanet_memory(images: np.ndarray, net: PCANet, k: int):
    """PCANet features reduced to k dimensions by PCA (the memory vectors y_s).

    Returns:
        (memory (m, k), the fitted PCA of the feature vectors).
    """
    feats = net.features(images)
    pca = fit_pca(feats, min(k, feats.shape[0], feats.shape[1]))
    return pca.transform(feats), pca
