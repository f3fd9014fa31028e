"""MLEM and OSEM for rebinned sinograms, all planes at once.

Model of the expected counts in sinogram cell i of plane p (ordinary-Poisson form):

    ybar[i, p] = m[i, p] * (A x[:, p])[i] + r[i, p]

``A`` is the system matrix (line integrals, mm), ``m`` the multiplicative factors (ring pairs per
plane times attenuation factors ``exp(-A mu)``, times the normalisation when given), ``r`` the
additive randoms estimate. The
update of subset S is

    x <- x / (A_S^T m_S) * A_S^T (m_S * y_S / ybar_S)

which with one subset is MLEM and never decreases the Poisson log-likelihood
``sum(y log ybar - ybar - log y!)``, recorded after every iteration.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from ..runtime import progress
from .projector import SystemModel, TorchProjector

log = logging.getLogger(__name__)


@dataclass
class ReconResult:
    """Output of :func:`reconstruct`.

    Attributes:
        image: (planes, grid, grid) float32, indexed [z, y, x].
        loglik: (iterations,) Poisson log-likelihood after each iteration.
        seconds: wall time of the iterations.
    """

    image: np.ndarray
    loglik: np.ndarray
    seconds: float
    info: dict = field(default_factory=dict)


def poisson_loglik(y, ybar, log_factorials: float | None = None) -> float:
    """Poisson log-likelihood ``sum(y log ybar - ybar - lgamma(y + 1))`` in float64.

    Params:
        y, ybar: measured and expected counts (torch tensors of one shape).
        log_factorials: ``sum(lgamma(y + 1))`` when already known (it does not change
            between iterations).
    Returns:
        The log-likelihood; cells with ``ybar == 0`` and ``y > 0`` make it very negative."""
    import torch

    if log_factorials is None:
        log_factorials = float(torch.lgamma(y.double() + 1).sum())
    pos = y > 0
    term = (y[pos].double() * torch.log(ybar[pos].double().clamp_min(1e-300))).sum()
    return float(term - ybar.double().sum()) - log_factorials


def reconstruct(
    model: SystemModel,
    prompts: np.ndarray,
    iterations: int,
    subsets: int = 1,
    attenuation: np.ndarray | None = None,
    randoms: np.ndarray | None = None,
    device: str = "cpu",
    show_progress: bool = True,
    normalisation: np.ndarray | None = None,
) -> ReconResult:
    """Reconstruct every plane of a sinogram stack with MLEM (subsets = 1) or OSEM.

    Params:
        model: the system model (its plane weights scale each plane's sensitivity).
        prompts: (planes, views, bins) counts.
        iterations: full passes through the data.
        subsets: ordered subsets of interleaved views (1 = MLEM).
        attenuation: (planes, views, bins) attenuation factors exp(-int mu) in (0, 1], or None.
        randoms: (planes, views, bins) expected randoms per cell, or None.
        device: torch device.
        show_progress: show a progress bar over iterations.
        normalisation: (planes, views, bins) normalisation factors (``recon/normalisation.py``,
            ``factors_2d``), or None (1).
    Returns:
        A :class:`ReconResult`.
    Raises:
        ValueError: shapes that do not match the model, or more subsets than views.
    """
    import torch

    planes = prompts.shape[0]
    nv, nb = model.sino_shape
    if prompts.shape[1:] != (nv, nb):
        raise ValueError(f"sinogram shape {prompts.shape[1:]} does not match the system model's {(nv, nb)}")
    if len(model.plane_weight) != planes:
        raise ValueError(f"{planes} sinogram planes but the system model has {len(model.plane_weight)}")
    if not 1 <= subsets <= nv:
        raise ValueError(f"subsets = {subsets} must be between 1 and the number of views ({nv})")
    dev = torch.device(device)

    def cols(a: np.ndarray) -> torch.Tensor:
        # (planes, views, bins) -> (rows, planes): planes are the columns of one sparse product.
        return torch.from_numpy(np.ascontiguousarray(a.reshape(planes, -1).T, dtype=np.float32)).to(dev)

    proj = TorchProjector(model, dev, subsets)
    y = cols(prompts)
    mult = torch.from_numpy(model.plane_weight.astype(np.float32)).to(dev)[None, :].expand_as(y).clone()
    if attenuation is not None:
        mult *= cols(attenuation)
    if normalisation is not None:
        mult *= cols(normalisation)
    r = cols(randoms) if randoms is not None else torch.zeros_like(y)

    # Start from a uniform image per plane whose forward projection has the plane's net counts.
    ones = torch.ones(proj.n_pixels, planes, device=dev)
    unit = (mult * proj.forward(ones)).sum(0)
    net = (y - r).sum(0).clamp_min(0)
    x = ones * torch.where(unit > 0, net / unit.clamp_min(1e-30), torch.zeros_like(unit))[None, :]

    rows = [torch.from_numpy(rw).to(dev) for rw in proj.subset_rows]
    sens = [proj.back(mult[rw], s) for s, rw in enumerate(rows)]
    loglik = []
    log_factorials = float(torch.lgamma(y.double() + 1).sum())
    t0 = time.perf_counter()
    bar = progress(range(iterations), desc=f"{'MLEM' if subsets == 1 else 'OSEM'}", disable=not show_progress)
    for _ in bar:
        for s, rw in enumerate(rows):
            ybar = mult[rw] * proj.forward(x, s) + r[rw]
            ratio = torch.where(ybar > 0, y[rw] / ybar.clamp_min(1e-30), torch.zeros_like(ybar))
            x = torch.where(
                sens[s] > 0, x * proj.back(mult[rw] * ratio, s) / sens[s].clamp_min(1e-30), torch.zeros_like(x)
            )
        loglik.append(poisson_loglik(y, mult * proj.forward(x) + r, log_factorials))
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - t0
    g = model.grid
    image = x.T.reshape(planes, g, g).cpu().numpy().astype(np.float32)
    log.info(
        "%s: %d iterations x %d subsets, %d planes of %dx%d in %.2f s (%.3f s/iteration, %s)",
        "MLEM" if subsets == 1 else "OSEM",
        iterations,
        subsets,
        planes,
        g,
        g,
        seconds,
        seconds / iterations,
        dev,
    )
    return ReconResult(image, np.asarray(loglik, dtype=np.float64), seconds)
