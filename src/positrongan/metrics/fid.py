"""FID and KID on pytorch-fid's Inception-v3 features, only with the genuine FID weights.

pytorch-fid loads ``pt_inception-2015-12-05-6726825d.pth`` through the torch hub cache
(``torch.hub.get_dir()/checkpoints``, i.e. ``$TORCH_HOME/hub/checkpoints``) and downloads it
when absent. We never download: when the file is missing (or its SHA-256 does not start with
the ``6726825d`` in its name, i.e. it is some other network's weights under that name) both
metrics are reported as unavailable with the reason, never as a number.

- FID: Fréchet distance between Gaussians fitted to the 2048-d pool features; equal to
  ``pytorch_fid.fid_score.calculate_frechet_distance`` (tested), computed through the small
  N_a x N_b cross product (see :func:`frechet_distance`). Biased upwards at small N; the table
  states N beside it.
- KID (Bińkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel
  ``k(x, y) = (x.y / d + 1)^3``, averaged over random subsets; mean and standard deviation.

Grey images are replicated to 3 channels; pytorch-fid resizes to 299 px and scales [0, 1] to
[-1, 1] itself.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch

from ..io import load_torch

log = logging.getLogger(__name__)

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + WEIGHTS_FILE
WEIGHTS_SHA256_PREFIX = "6726825d"
UNAVAILABLE_MISSING = "unavailable: Inception weights missing"
UNAVAILABLE_HASH = "unavailable: Inception weights file does not match its hash"
DISABLED = "disabled (evaluation.fid: false)"


def weights_path() -> Path:
    """Where pytorch-fid looks for the Inception weights (the torch hub cache)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def _sha256_prefix(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[: len(WEIGHTS_SHA256_PREFIX)]


def weights_status() -> str | None:
    """None when the genuine FID Inception weights are in the hub cache, else why not.

    Logs, when they are missing, exactly where to put the file.
    """
    path = weights_path()
    if not path.is_file():
        log.warning(
            "FID/KID %s: put %s (download it from %s on a machine with internet) at %s "
            "(torch.hub.get_dir()/checkpoints; set TORCH_HOME to use another cache), then rerun "
            "evaluation (snakemake --forcerun evaluate_methods)",
            UNAVAILABLE_MISSING,
            WEIGHTS_FILE,
            WEIGHTS_URL,
            path,
        )
        return UNAVAILABLE_MISSING
    prefix = _sha256_prefix(path)
    if prefix != WEIGHTS_SHA256_PREFIX:
        log.warning(
            "FID/KID %s: %s has SHA-256 %s..., expected %s...; replace it with the file from %s",
            UNAVAILABLE_HASH,
            path,
            prefix,
            WEIGHTS_SHA256_PREFIX,
            WEIGHTS_URL,
        )
        return UNAVAILABLE_HASH
    return None


def load_inception(device) -> torch.nn.Module:
    """pytorch-fid's InceptionV3 (2048-d pool features), loaded from :func:`weights_path` only.

    pytorch-fid fetches its weights with ``load_state_dict_from_url``, which downloads when the
    file is absent and unpickles without ``weights_only``. We swap that one call for a local
    ``load_torch(weights_path())`` (``weights_only=True``) while the network is built, so there is no
    network access whatever the cache holds. Call only after :func:`weights_status` returned None.
    """
    import pytorch_fid.inception as pfi

    def local_weights(url, *args, **kwargs):
        return load_torch(weights_path(), what="Inception weights file")

    original = pfi.load_state_dict_from_url
    pfi.load_state_dict_from_url = local_weights
    try:
        model = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    finally:
        pfi.load_state_dict_from_url = original
    return model.eval().to(device)


@torch.no_grad()
def activations(model: torch.nn.Module, images: np.ndarray, batch_size: int, device) -> np.ndarray:
    """Pool features of grey images.

    Params:
        model: pytorch-fid InceptionV3 (or anything with its call convention: a list whose
            first entry is (B, D, 1, 1)).
        images: (N, S, S) in [0, 1].
        batch_size: images per forward pass.
        device: torch device.
    Returns:
        (N, D) float64 array.
    """
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.as_tensor(np.asarray(images[start : start + batch_size], dtype=np.float32), device=device)
        batch = batch[:, None].expand(-1, 3, -1, -1)  # grey -> RGB by replication
        feats = model(batch)[0]
        out.append(feats.reshape(feats.shape[0], -1).double().cpu().numpy())
    return np.concatenate(out, axis=0)


def frechet_distance(act_a: np.ndarray, act_b: np.ndarray) -> float:
    """FID between two activation sets: the Fréchet distance of their fitted Gaussians.

    The same quantity as ``pytorch_fid.fid_score.calculate_frechet_distance`` on
    ``np.cov`` statistics (tests/test_metrics.py checks the two agree), computed without a
    2048 x 2048 ``scipy.linalg.sqrtm``: with centred activations X_a, X_b and
    Sigma = X^T X / (n - 1), the non-zero eigenvalues of Sigma_a Sigma_b are the squared singular
    values of X_a X_b^T / sqrt((n_a - 1)(n_b - 1)), so Tr sqrt(Sigma_a Sigma_b) is that small
    matrix's nuclear norm. Exact, milliseconds instead of about a minute per row on one core,
    and free of the spurious imaginary parts sqrtm produces when N < 2048 makes Sigma singular.

    Params:
        act_a, act_b: (N_a, D), (N_b, D) activations, N >= 2.
    Returns:
        The FID.
    """
    act_a, act_b = np.asarray(act_a, np.float64), np.asarray(act_b, np.float64)
    mu_a, mu_b = act_a.mean(axis=0), act_b.mean(axis=0)
    xa, xb = act_a - mu_a, act_b - mu_b
    na, nb = len(act_a) - 1, len(act_b) - 1
    tr_a = float((xa * xa).sum()) / na
    tr_b = float((xb * xb).sum()) / nb
    tr_covmean = float(np.linalg.svd(xa @ xb.T, compute_uv=False).sum()) / np.sqrt(na * nb)
    diff = mu_a - mu_b
    return float(diff @ diff + tr_a + tr_b - 2.0 * tr_covmean)


def kernel_inception_distance(
    act_a: np.ndarray, act_b: np.ndarray, subsets: int, subset_size: int, rng: np.random.Generator
) -> tuple[float, float, int]:
    """KID: unbiased MMD^2 with the cubic polynomial kernel, over random subsets.

    Params:
        act_a, act_b: (N, D), (M, D) activations.
        subsets: number of random subsets.
        subset_size: images per subset, capped at min(N, M).
        rng: numpy Generator.
    Returns:
        (mean, standard deviation over subsets, subset size used).
    """
    m = min(subset_size, len(act_a), len(act_b))
    if m < 2:
        raise ValueError("KID needs at least 2 images in each set")
    d = act_a.shape[1]
    vals = np.empty(subsets)
    for k in range(subsets):
        x = act_a[rng.choice(len(act_a), m, replace=False)]
        y = act_b[rng.choice(len(act_b), m, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        vals[k] = (
            (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()
        )
    return float(vals.mean()), float(vals.std()), m
