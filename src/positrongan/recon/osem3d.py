"""Fully 3D OSEM: every prompt whose LOR crosses the field of view, in a 3D sinogram of all
oblique ring pairs, with attenuation and randoms in the model.

Each coincidence is binned to its exact LOR (crystal a in ring r1, crystal b in ring r2): no
rebinning, no ring-difference cut, no axial mashing. Model of the expected counts of LOR i:

    ybar_i = n_i * a_i * (A x)_i + r_i

with ``A`` the projector of :class:`~positrongan.recon.projector3d.RingProjector3D` (line
integrals, mm), ``a_i = exp(-(A mu)_i)`` the attenuation factor from the known mu-map (the same
projector), ``r_i`` the randoms estimate, and ``n_i = cos^3(theta_i)`` the geometric
normalisation of a LOR at angle ``theta_i`` to the transverse plane. A photon pair emitted on
the LOR is detected in its crystal pair with the probability of hitting the crystal face, whose
solid angle ``A cos(theta) / d^2`` (d = L / 2 at the chord's centre, L = L_xy / cos(theta))
falls as ``cos^3`` relative to the direct LOR of the same chord; the line integral already holds
the longer path. Measured on a default scan (prompts minus randoms over the model of the true
activity, per ring difference, relative to the direct LORs): 0.97, 0.89, 0.81, 0.71, 0.61, 0.49,
0.41 at ring differences 8 to 56 in steps of 8, against cos^3 = 0.98, 0.91, 0.81, 0.70, 0.59,
0.50, 0.41. With ``reconstruction.normalisation`` the factor becomes ``cos^3 g(t) h(r1, r2)``,
the component normalisation measured on a simulated uniform source (``recon/normalisation.py``:
the detector's radial response and the rings' axial factors). Transaxially, the crystal's
cos / d^2 and the chord length cancel, as in the 2D mode. The OSEM update of subset S
(interleaved views, as in 2D), with m = n * a, is

    x <- x / (A_S^T m_S) * A_S^T (m_S * y_S / ybar_S)

whose sensitivity image ``A_S^T m_S`` back-projects every LOR of the scanner through the field
of view (exact, with the same projector). With one subset this is MLEM, which never decreases
the Poisson log-likelihood.

Randoms: the singles-rate ("fan-sum") estimate from the delayed window. A random pair's rate is
``2 tau s_i s_j``; the delayed coincidences of crystal i summed over its partners give
``D_i ~ s_i sum_j s_j``, so ``r_ij = k D_i D_j``, with ``k`` fixed so that the estimate's sum
over the 3D sinogram equals the number of delayed coincidences binned in it. Sparse delayed
counts (a few per thousand LORs) thus give a smooth, low-variance estimate for every LOR. Each
delayed coincidence is weighted by the chance that such a random survives the sorter's multiples
policy in the prompt window (``recon/randoms.py``: 1 under take_all_good, ``1 - q_opener`` under
kill_all). ``reconstruction.randoms: singles`` instead bins ``2 tau S_i S_j`` (with the same
policy correction) from the singles counts per crystal.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from ..errors import ConfigError
from ..geometry.scanner import Scanner
from ..runtime import progress
from .mlem import ReconResult
from .projector3d import RingProjector3D
from .randoms import RandomsSpec, fan_sum, pair_sinogram

log = logging.getLogger(__name__)


def fan_sum_randoms(
    proj: RingProjector3D, d1: np.ndarray, d2: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, int]:
    """Randoms per LOR of the 3D sinogram from delayed coincidences (module docstring).

    Params:
        proj: the projector (its chord order and crystals).
        d1, d2: CrystalIDs of the delayed coincidences (opener, partner).
        weights: per delayed coincidence, the chance that such a random survives the prompt
            window's multiples policy (``recon/randoms.py``); None: 1 (take_all_good).
    Returns:
        ((ring pairs, chords) float32 expected randoms, delayed coincidences in the sinogram).
        The estimate's sum is the weighted count of those coincidences.
    """
    _, valid = proj.bin_events(d1, d2)
    n_in = int(valid.sum())
    total = float(n_in if weights is None else weights[valid].sum())
    est = fan_sum(proj.scanner, proj.crystal_a, proj.crystal_b, d1, d2, weights, total)
    return est, n_in


def randoms_sinogram(proj: RingProjector3D, spec: RandomsSpec) -> np.ndarray:
    """The 3D sinogram of expected randoms of a :class:`~positrongan.recon.randoms.RandomsSpec`."""
    if spec.method == "singles":
        u, w, k = spec.factors
        return pair_sinogram(u, w, k, proj.scanner, proj.crystal_a, proj.crystal_b).astype(np.float32)
    return fan_sum_randoms(proj, *spec.delayed, spec.weights)[0]


def reconstruct_3d(
    proj: RingProjector3D,
    prompts: np.ndarray,
    iterations: int,
    attenuation: np.ndarray | None = None,
    randoms: np.ndarray | None = None,
    normalisation: np.ndarray | None = None,
    show_progress: bool = True,
    scatter=None,
    scatter_updates: tuple[int, ...] = (),
    rdp_beta: float = 0.0,
    rdp_gamma: float = 2.0,
    callback=None,
    extra_iterations: int = 0,
    psf=None,
) -> ReconResult:
    """OSEM (MLEM with one subset) of a 3D sinogram, or MAP-OSEM with the relative-difference
    prior (De Pierro's modified EM, ``recon/prior.py``) when ``rdp_beta`` > 0.

    Params:
        proj: the projector; its ``subsets`` are the OSEM subsets.
        prompts: (ring pairs, chords) counts.
        iterations: full passes through the data.
        attenuation: (ring pairs, chords) factors in (0, 1], or None.
        randoms: (ring pairs, chords) expected randoms, or None.
        normalisation: (ring pairs, chords) geometric factors (``proj.obliquity()``), or None (1).
        show_progress: progress bar over iterations.
        scatter: a :class:`~positrongan.recon.scatter.ScatterModel`, or None (no scatter term).
        scatter_updates: 0-based iterations before which the scatter estimate is refitted from
            the current image (the model is ``n a A x + s + r``; iteration 0 has no image to
            estimate from, so its ``s`` is 0).
        rdp_beta: strength of the relative-difference prior, in units of the mean sensitivity
            over the field of view (the penalty's weight is ``rdp_beta * mean(A^T m)``, so one
            value means the same balance on any grid or scanner); 0: plain OSEM, bit for bit.
        rdp_gamma: the prior's edge-preservation parameter (Nuyts et al. 2002).
        callback: called as ``callback(k, x)`` with the image tensor after every full iteration
            k = 1 .. iterations + extra_iterations (its time is not counted in ``seconds``).
        extra_iterations: iterations run after the result's, only for ``callback`` (the image
            at ``iterations``, its log-likelihood and time are the result, unchanged).
        psf: an image-space resolution model H (``recon/psf.py``; self-adjoint), or None: the
            system is then ``A H`` (forward ``A H x``, back ``H A^T``).
    Returns:
        A :class:`~positrongan.recon.mlem.ReconResult`; ``loglik[k]`` is the Poisson
        log-likelihood (with the log y! term) after iteration k+1. With one subset every entry is
        exact. With several, the last is exact and the others add up each subset's terms as it
        is projected during the next iteration (the image changes between subsets), which costs
        no extra projection.
    Raises:
        ValueError: arrays whose shape is not the projector's sinogram.
    """
    import torch

    dev, dt = proj.device, proj.dtype
    named = (("prompts", prompts), ("attenuation", attenuation), ("randoms", randoms), ("normalisation", normalisation))
    for name, arr in named:
        if arr is not None and tuple(arr.shape) != proj.shape:
            raise ValueError(f"{name} shape {tuple(arr.shape)} is not the projector's 3D sinogram {proj.shape}")
    y = torch.as_tensor(prompts, dtype=dt, device=dev)
    mult = None
    for factor in (attenuation, normalisation):
        if factor is not None:
            factor = torch.as_tensor(factor, dtype=dt, device=dev)
            mult = factor if mult is None else mult * factor
    r = None if randoms is None else torch.as_tensor(randoms, dtype=dt, device=dev)
    planes, ny, nx = proj.image_grid.shape
    mask = torch.as_tensor(proj.image_grid.fov_mask(), device=dev)

    t0 = time.perf_counter()
    weight = mult if mult is not None else torch.ones(proj.shape, dtype=dt, device=dev)
    blur = psf if psf is not None else (lambda v: v)
    sens = [blur(proj.back(weight[:, slice(*proj.subset_range(s))], s)) for s in range(proj.subsets)]
    del weight
    sens_total = sum(sens)
    # Start from a uniform image in the FOV whose forward model has the net counts:
    # sum_i m_i (A x)_i = sum_v sens_v x_v.
    net = float(y.sum()) - (float(r.sum()) if r is not None else 0.0)
    unit = float((sens_total * mask).sum())
    x = mask.to(dt).expand(planes, ny, nx) * (max(net, 0.0) / unit if unit > 0 else 0.0)
    setup = time.perf_counter() - t0

    log_factorials = float(torch.lgamma(y.double() + 1).sum())

    beta_abs = 0.0
    if rdp_beta > 0:
        from .prior import EPS_FRACTION, RelativeDifferencePrior, modified_em

        fov = mask.expand(planes, ny, nx)
        # The prior's weight in the likelihood's units, and eps a fraction of the starting level
        # (the mean activity over the field of view; prior.py says why).
        beta_abs = float(rdp_beta) * float(sens_total[fov].mean())
        eps = EPS_FRACTION * float(x.max()) if float(x.max()) > 0 else 1e-12
        prior = RelativeDifferencePrior(x.shape, proj.image_grid.voxel_mm, rdp_gamma, eps, fov, dev, dt)
    prior_model = None  # (gradient, curvature, anchor image) of the quadratic model the next subset uses

    def model_at(x):
        # The prior's separable quadratic model around the image the subset starts from, rebuilt
        # for every subset as STIR's OSMAPOSL evaluates its prior per sub-iteration. Built once per
        # full iteration instead, it went stale as the subsets moved the image: at 8 subsets the
        # images came out less regularised and noisier (cracks' median CNR 2.67 against 3.51,
        # docs/detectability.md), and the limit cycle sat twice as far from the MAP solution
        # (tests/test_recon_prior.py).
        return (*prior.gradient(x, curvature=True), x)

    def subset_pass(x, s, update=True):
        """One subset: its log-likelihood terms at x, and the updated image."""
        xt = proj.prepare(blur(x))
        acc = torch.zeros((ny * nx, planes), dtype=dt, device=dev)
        ll = 0.0
        for ch in proj.chunks:
            if ch.subset != s:
                continue
            cols = slice(ch.lo, ch.hi)
            ybar = proj.forward_chunk(xt, ch)
            if mult is not None:
                ybar = ybar * mult[:, cols]
            if add is not None:
                ybar = ybar + add[:, cols]
            yc = y[:, cols]
            safe = ybar.clamp_min(1e-30)  # ybar = 0 only where y = 0 unless x vanished along the LOR
            # y log ybar - ybar per LOR in the working dtype, summed in float64 (xlogy: 0 where y = 0).
            ll += float(torch.xlogy(yc, safe).sum(dtype=torch.float64)) - float(ybar.sum(dtype=torch.float64))
            if update:
                ratio = torch.where(ybar > 0, yc / safe, torch.zeros_like(ybar))
                if mult is not None:
                    ratio = ratio * mult[:, cols]
                acc += proj.back_chunk(ratio, ch)
        if not update:
            return ll, x
        back = blur(acc.T.reshape(planes, ny, nx))
        if prior_model is not None:
            return ll, modified_em(x, back, sens[s], *prior_model, beta_abs / proj.subsets)
        x = torch.where(sens[s] > 0, x * back / sens[s].clamp_min(1e-30), torch.zeros_like(x))
        return ll, x

    add = r  # the additive term: randoms, plus scatter once estimated
    scatter_info = []
    loglik = []
    bar = progress(range(iterations), desc=f"{'MLEM' if proj.subsets == 1 else 'OSEM'} 3D", disable=not show_progress)
    t1, cpu1 = time.perf_counter(), time.process_time()
    aside, aside_cpu = 0.0, 0.0  # time spent in the callback, not part of the reconstruction's
    penalty = []

    def snapshot(k, x):
        nonlocal aside, aside_cpu
        if beta_abs > 0 and k <= iterations:
            penalty.append(prior.value(x))
        if callback is not None:
            t, c = time.perf_counter(), time.process_time()
            callback(k, x)
            aside += time.perf_counter() - t
            aside_cpu += time.process_time() - c

    for k in bar:
        if scatter is not None and k in scatter_updates:
            t_s = time.perf_counter()
            trues = proj.forward(blur(x))
            if mult is not None:
                trues = trues * mult
            est, info = scatter.estimate(trues, y, r)
            del trues
            add = est if r is None else r + est
            info.update(iteration=k, seconds=time.perf_counter() - t_s)
            scatter_info.append(info)
        ll = 0.0
        for s in range(proj.subsets):
            if beta_abs > 0:
                prior_model = model_at(x)
            ll_s, x = subset_pass(x, s)
            ll += ll_s
        if k > 0:
            loglik.append(ll - log_factorials)  # the image after iteration k (exact for MLEM)
        snapshot(k + 1, x)
    final = sum(subset_pass(x, s, update=False)[0] for s in range(proj.subsets))
    loglik.append(final - log_factorials)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds, cpu_seconds = time.perf_counter() - t1 - aside, time.process_time() - cpu1 - aside_cpu
    image = x.cpu().numpy().astype(np.float32)
    if extra_iterations > 0:
        t2 = time.perf_counter()
        extra_bar = progress(
            range(iterations, iterations + extra_iterations), desc="extra iterations", disable=not show_progress
        )
        for k in extra_bar:
            for s in range(proj.subsets):
                if beta_abs > 0:
                    prior_model = model_at(x)
                x = subset_pass(x, s)[1]
            snapshot(k + 1, x)
        log.info("%d extra iterations for the snapshots in %.2f s", extra_iterations, time.perf_counter() - t2)
    log.info(
        "%s 3D: %d iterations x %d subsets, %d LORs, %d planes of %dx%d in %.2f s (%.3f s/iteration, "
        "sensitivity %.2f s, %s)",
        "MLEM" if proj.subsets == 1 else "OSEM",
        iterations,
        proj.subsets,
        proj.shape[0] * proj.shape[1],
        planes,
        ny,
        nx,
        seconds,
        seconds / iterations,
        setup,
        dev,
    )
    extra = {"setup_seconds": setup, "cpu_seconds": cpu_seconds}
    if beta_abs > 0:
        # The MAP objective L(x) - beta U(x) of every iterate (exact where loglik is).
        pen = np.asarray(penalty, dtype=np.float64)
        extra.update(
            rdp_beta=float(rdp_beta),
            rdp_gamma=float(rdp_gamma),
            rdp_beta_abs=beta_abs,
            rdp_eps=eps,
            penalty=pen,
            objective=np.asarray(loglik, dtype=np.float64) - beta_abs * pen,
        )
    if scatter_info:
        extra["scatter"] = scatter_info
    return ReconResult(image, np.asarray(loglik, dtype=np.float64), seconds, extra)


def reconstruct_scan_3d(
    c1: np.ndarray,
    c2: np.ndarray,
    delayed: tuple[np.ndarray, np.ndarray] | None,
    scanner: Scanner,
    recon_cfg: dict,
    mu: np.ndarray | None,
    device,
    randoms: RandomsSpec | None = None,
    callback=None,
    extra_iterations: int = 0,
    normalisation: dict | None = None,
) -> tuple[ReconResult, dict]:
    """Crystal pairs of one scan -> fully 3D OSEM image (MAP-OSEM with the relative-difference
    prior when ``reconstruction.rdp_beta`` > 0).

    Params:
        c1, c2: CrystalIDs of the prompts.
        delayed: CrystalIDs of the delayed coincidences, or None.
        scanner: geometry.
        recon_cfg: the ``reconstruction`` section.
        mu: (planes, grid, grid) mu-map in 1/mm for attenuation correction, or None.
        device: torch device.
        randoms: the randoms estimate to model (``recon/randoms.py``), or None.
        callback, extra_iterations: as :func:`reconstruct_3d` (per-iteration snapshots).
        normalisation: the factors of ``recon/normalisation.npz`` (``recon/normalisation.py``),
            multiplied into the geometric ``cos^3``; None: ``cos^3`` alone.
    Returns:
        (result, info): info holds ``prompts`` (binned), ``delayed`` (binned), ``randoms``
        (bool), ``attenuation`` (bool), ``normalised`` (bool), ``subsets`` and ``lors``.
    """
    import torch

    subsets = recon_cfg["subsets"] if recon_cfg["algorithm"] == "osem" else 1
    t0 = time.perf_counter()
    proj = RingProjector3D(
        scanner,
        recon_cfg["fov_mm"],
        recon_cfg["grid"],
        recon_cfg["doi_mm"],
        device=device,
        subsets=subsets,
        step_voxels=recon_cfg["step_voxels"],
        lors_per_batch=recon_cfg["lors_per_batch"],
    )
    prompts, n_prompts = proj.histogram(c1, c2)
    info = {"prompts": n_prompts, "delayed": 0, "subsets": subsets, "lors": proj.shape[0] * proj.shape[1]}
    if delayed is not None:
        info["delayed"] = int(proj.bin_events(*delayed)[1].sum())
    est = None if randoms is None else randoms_sinogram(proj, randoms)
    if est is not None:
        log.info("randoms (%s): %.4g expected in the 3D sinogram", randoms.method, float(est.sum(dtype=np.float64)))
    randoms = est
    atten = None
    if mu is not None:
        atten = torch.exp(-proj.forward(torch.as_tensor(mu, dtype=proj.dtype)))
        log.info("attenuation factors: min %.3f, mean %.3f", float(atten.min()), float(atten.mean()))
    log.info("3D sinogram, randoms and attenuation in %.2f s", time.perf_counter() - t0)
    scatter = None
    if recon_cfg["scatter_correction"]:
        if mu is None:
            raise ConfigError(
                "config key 'reconstruction.scatter_correction' is true but there is no mu-map "
                "(it needs reconstruction.attenuation_correction and --truth)"
            )
        from .scatter import ScatterModel

        scatter = ScatterModel(proj, torch.as_tensor(mu, dtype=proj.dtype))
    updates = tuple(k for k in recon_cfg["scatter_updates"] if k < recon_cfg["iterations"])
    norm = proj.obliquity()
    if normalisation is not None:
        from .normalisation import lor_factors_3d

        norm = norm * torch.as_tensor(lor_factors_3d(normalisation, proj), dtype=proj.dtype, device=proj.device)
    psf = None
    if recon_cfg.get("psf_fwhm_mm", 0.0) > 0:  # absent: none (partial configs of tests)
        from .psf import GaussianPSF

        psf = GaussianPSF(proj.image_grid.voxel_mm, recon_cfg["psf_fwhm_mm"])
    result = reconstruct_3d(
        proj,
        prompts,
        recon_cfg["iterations"],
        attenuation=atten,
        randoms=randoms,
        normalisation=norm,
        scatter=scatter,
        scatter_updates=updates,
        rdp_beta=recon_cfg.get("rdp_beta", 0.0),  # absent: plain OSEM (partial configs of tests)
        rdp_gamma=recon_cfg.get("rdp_gamma", 2.0),
        callback=callback,
        extra_iterations=extra_iterations,
        psf=psf,
    )
    info["scatter"] = bool(result.info.get("scatter"))
    info["randoms"] = randoms is not None
    info["attenuation"] = atten is not None
    info["normalised"] = normalisation is not None
    return result, info
