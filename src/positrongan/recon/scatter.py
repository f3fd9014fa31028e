"""Model-based scatter estimate for the 3D forward model, fitted to the scatter tails.

Method: the convolution model of Bailey and Meikle (Phys. Med. Biol. 39 (1994) 411, "A
convolution-subtraction scatter correction method for 3D PET"), used in the forward model
(added, not subtracted) and with its amplitude and width fitted to the tails, as scatter
estimates are scaled in practice (Watson, IEEE NSS 1996 and IEEE TNS 47 (2000) 1587, for the
tail scaling of single-scatter simulation). Scattered coincidences come from the same emissions
as the trues, their LORs displaced by the Compton deflection; their sinogram is modelled as the
unscattered expected trues ``t = n a A x`` (current image ``x``, known mu-map in ``a``) blurred by
a separable kernel ``exp(-|d| / beta)`` along the radial bins and along both rings of the LOR:

    s = alpha * K_beta (t)

The tails are the LORs that miss the part (their line integral through the mu-map's support,
``mu > SUPPORT_MU_PER_MM``, dilated by ``TAIL_MARGIN_MM``, is zero): there the prompts hold only scatter and randoms, so
``alpha = sum_tail (y - r) / sum_tail K_beta(t)``, and ``beta`` is the candidate of
``WIDTHS_R`` (times the part's radius) with the smallest Poisson deviance over the tails. The estimate is refreshed from the
current image at the iterations ``reconstruction.scatter_updates`` names (the first iteration
runs without scatter).
"""

from __future__ import annotations

import logging
import math

import numpy as np

log = logging.getLogger(__name__)

# Candidate kernel widths (1/e length) as multiples of the part's radius: a Compton deflection
# inside the part moves the LOR by a distance of the order of the part's size, and a kernel
# much narrower than that fits the blurred edge of the trues instead of the scatter (measured:
# 0.4 R picked on a 25 mm tube doubles the scatter estimate).
WIDTHS_R = (0.75, 1.5, 3.0)
# LORs closer than this to the part are not tails (resolution and the post-filter blur trues
# that far).
TAIL_MARGIN_MM = 6.0
# The part's support in the mu-map: above air (1e-5 / mm at 511 keV), below any solid or liquid
# (water 0.0096 / mm).
SUPPORT_MU_PER_MM = 1e-3


def _toeplitz(n: int, pitch_mm: float, beta_mm: float):
    """(n, n) matrix of exp(-|i - j| pitch / beta)."""
    import torch

    d = torch.arange(n, dtype=torch.float64)
    return torch.exp(-(d[:, None] - d[None, :]).abs() * (pitch_mm / beta_mm))


class ScatterModel:
    """Tail-fitted convolution scatter model on a :class:`~positrongan.recon.projector3d.RingProjector3D`.

    Params:
        proj: the projector.
        mu: (planes, ny, nx) torch mu-map (1/mm) on the projector's grid.
    """

    def __init__(self, proj, mu):
        import torch
        from scipy import ndimage

        self.proj = proj
        nv, nb = proj.geometry.shape
        self.shape_dense = (proj.rings, proj.rings, nv, nb)
        self.pos = torch.as_tensor(proj.position.reshape(nv, nb), device=proj.device)
        vz, vy, vx = proj.image_grid.voxel_mm
        support = mu.cpu().numpy() > SUPPORT_MU_PER_MM
        r = [max(1, math.ceil(TAIL_MARGIN_MM / v)) for v in (vz, vy, vx)]
        zz, yy, xx = np.ogrid[-r[0] : r[0] + 1, -r[1] : r[1] + 1, -r[2] : r[2] + 1]
        ball = (zz * vz) ** 2 + (yy * vy) ** 2 + (xx * vx) ** 2 <= TAIL_MARGIN_MM**2
        grown = ndimage.binary_dilation(support, ball)
        _, ny, nx = support.shape
        _, oy, ox = proj.image_grid.origin_mm
        yy_, xx_ = np.meshgrid(oy + np.arange(ny) * vy, ox + np.arange(nx) * vx, indexing="ij")
        flat = support.any(axis=0)
        self.radius_mm = float(np.hypot(yy_, xx_)[flat].max()) if flat.any() else 10.0
        self.widths = tuple(round(w * self.radius_mm, 1) for w in WIDTHS_R)
        line = proj.forward(torch.as_tensor(grown.astype(np.float32), dtype=proj.dtype))
        self.tail = line <= 0
        radius = proj.geometry.radius_mm
        radial_pitch = math.pi * radius / proj.geometry.crystals  # bin spacing near the centre
        self.radial = {b: _toeplitz(nb, radial_pitch, b).to(proj.device, proj.dtype) for b in self.widths}
        self.axial = {
            b: _toeplitz(proj.rings, proj.scanner.axial_pitch_mm, b).to(proj.device, proj.dtype) for b in self.widths
        }
        self.tail_fraction = float(self.tail.double().mean())
        log.info("scatter tails: %.1f %% of the LORs of the 3D sinogram", 100 * self.tail_fraction)

    def blur(self, t, beta: float):
        """``K_beta(t)`` for a (ring pairs, chords) sinogram."""
        rings = self.proj.rings
        nv, nb = self.shape_dense[2:]
        dense = t[:, self.pos.reshape(-1)].reshape(rings, rings, nv, nb)
        dense = dense @ self.radial[beta].T  # radial bins
        z = self.axial[beta]
        dense = (z @ dense.reshape(rings, -1)).reshape(rings, rings, nv, nb)  # ring 1
        dense = (z @ dense.transpose(0, 1).reshape(rings, -1)).reshape(rings, rings, nv, nb).transpose(0, 1)  # ring 2
        out = t.new_empty(t.shape)
        out[:, self.pos.reshape(-1)] = dense.reshape(rings * rings, nv * nb)
        return out

    def estimate(self, trues, prompts, randoms):
        """Scatter sinogram fitted to the tails.

        Params:
            trues: (ring pairs, chords) unscattered expected trues ``n a A x``.
            prompts: the measured prompts.
            randoms: the randoms estimate, or None.
        Returns:
            (scatter sinogram, info dict: ``alpha``, ``beta_mm``, ``fraction`` = scatter / prompts).
        """
        import torch

        tail = self.tail
        y_t = prompts[tail].double()
        r_t = randoms[tail].double() if randoms is not None else torch.zeros_like(y_t)
        excess = float((y_t - r_t).sum())
        best = None
        for beta in self.widths:
            b = self.blur(trues, beta)
            b_t = b[tail].double()
            denom = float(b_t.sum())
            alpha = max(excess, 0.0) / denom if denom > 0 else 0.0
            ybar = (alpha * b_t + r_t).clamp_min(1e-12)
            dev = float((ybar - y_t * torch.log(ybar)).sum())
            if best is None or dev < best[0]:
                best = (dev, beta, alpha, b)
        _, beta, alpha, b = best
        s = b * alpha
        info = {"alpha": alpha, "beta_mm": beta, "fraction": float(s.sum()) / max(float(prompts.sum()), 1.0)}
        log.info("scatter: beta %.0f mm, alpha %.4g, %.1f %% of the prompts", beta, alpha, 100 * info["fraction"])
        return s, info
