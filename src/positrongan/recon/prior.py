"""The relative-difference prior (RDP) of Nuyts et al. 2002 ("A concave prior penalizing relative
differences for maximum-a-posteriori reconstruction in emission tomography", IEEE Trans. Nucl.
Sci. 49(1):56-60), for MAP-OSEM.

Penalty (STIR's convention: every unordered neighbour pair counted once)

    U(x) = sum_{j < k, k in N_j} w_jk (x_j - x_k)^2 / (x_j + x_k + gamma |x_j - x_k| + eps)

over the 26-neighbourhood of a voxel, with ``w_jk`` the inverse centre distance in units of the
smallest voxel side (1 for the nearest transaxial neighbour on the 2 x 1 x 1 mm grid, 1/2 for
the axial one), and only pairs whose two voxels lie in the reconstruction's field of view (the
image is 0 outside, and a pair with a forced 0 would pull the FOV edge down). Its gradient is

    dU/dx_j = sum_k w_jk (x_j - x_k)(x_j + 3 x_k + gamma |x_j - x_k| + 2 eps) / D_jk^2,

with D_jk the denominator above. ``gamma`` sets the edge preservation (0: close to a quadratic
penalty on relative differences; large: close to an absolute-value penalty). The penalty is
homogeneous of degree 1 in x (eps aside), so its gradient does not grow with the image scale.

Its diagonal Hessian (for the update below) is

    d2U/dx_j^2 = sum_k w_jk 2 (2 x_k + eps)^2 / D_jk^3.

MAP-OSEM update (De Pierro 1995, "A modified expectation maximization algorithm for penalized
likelihood estimation in emission tomography", IEEE Trans. Med. Imaging 14(1):132-137): before
each subset's update the penalty is replaced by its separable quadratic model around the current
image x0, U(x0) + g (x - x0) + c (x - x0)^2 / 2 (g the gradient, c the diagonal Hessian);
for subset S of n, each voxel then maximises the EM surrogate of the subset's log-likelihood
minus (beta / n) times that model, whose positive root is

    x_j = 2 C / (B + sqrt(B^2 + 4 A C)),  A = b c_j,  B = s_j + b (g_j - c_j x0_j),  C = x_j back_j,

with b = beta / n, s_j the subset's sensitivity and back_j its back-projected ratio (EM alone is
C / s_j). With beta = 0 the update is OSEM. The one-step-late update of Green (1990, IEEE Trans.
Med. Imaging 9(1):84-93), x back / (s + b g), was tried first: on the default short scans it
diverged (the MAP objective fell by orders of magnitude) at the betas that smooth enough to
compete with a post-filter, where b g exceeds s and the denominator must be clipped; the
quadratic model keeps every update positive and damped by the prior's curvature.
The model's curvature is the prior's own at x0, not a proven upper bound, so an increase of
L - beta U is checked by the tests (one subset, small and moderate beta), not guaranteed.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

# eps of the denominator as a fraction of the mean activity over the field of view (the uniform
# starting image): it only keeps 0/0 away where two neighbours are both 0. (0.1 and 1 gave the
# same short-scan images as 1e-3: the spikes of a MAP image at a few thousand prompts are not
# an eps effect; docs/enhancement.md.)
EPS_FRACTION = 1e-3

# Half of the 26-neighbourhood: each unordered pair once.
OFFSETS: tuple[tuple[int, int, int], ...] = tuple(o for o in itertools.product((-1, 0, 1), repeat=3) if o > (0, 0, 0))


def weights(voxel_mm) -> np.ndarray:
    """w of each of :data:`OFFSETS`: the inverse centre distance in units of the smallest side."""
    v = np.asarray(voxel_mm, dtype=np.float64)
    return np.array([v.min() / math.sqrt(float(((np.array(o) * v) ** 2).sum())) for o in OFFSETS])


def _pairs(shape, offset):
    """Slices (a, b) of a (Z, Y, X) array such that b's voxels are a's shifted by ``offset``."""
    a, b = [], []
    for n, d in zip(shape, offset):
        a.append(slice(max(0, -d), n - max(0, d)))
        b.append(slice(max(0, d), n - max(0, -d)))
    return tuple(a), tuple(b)


class RelativeDifferencePrior:
    """Value and gradient of the relative-difference penalty (module docstring) on one grid.

    Params:
        shape: (Z, Y, X) image shape.
        voxel_mm: (3,) voxel size (z, y, x), for the weights.
        gamma: edge-preservation parameter (>= 0).
        eps: small positive constant of the denominator (the image's units).
        mask: (Z, Y, X) bool tensor of the voxels the penalty acts on, or None (all).
        device, dtype: of the pair weights (the image's).
    """

    def __init__(self, shape, voxel_mm, gamma: float, eps: float, mask=None, device=None, dtype=None):
        import torch

        self.gamma, self.eps = float(gamma), float(eps)
        self.pairs = []
        for off, wk in zip(OFFSETS, weights(voxel_mm)):
            a, b = _pairs(shape, off)
            if mask is None:
                pw = torch.full([s.stop - s.start for s in a], float(wk), device=device, dtype=dtype)
            else:
                pw = float(wk) * (mask[a] & mask[b]).to(device=device, dtype=dtype)
            self.pairs.append((a, b, pw))

    def value(self, x) -> float:
        """U(x) (float64 sum)."""
        import torch

        total = torch.zeros((), dtype=torch.float64, device=x.device)
        g, eps = self.gamma, self.eps
        for a, b, pw in self.pairs:
            d = x[a] - x[b]
            total += (pw * d * d / (x[a] + x[b] + g * d.abs() + eps)).sum(dtype=torch.float64)
        return float(total)

    def gradient(self, x, curvature: bool = False):
        """dU/dx, a tensor like x; with ``curvature``, (dU/dx, the diagonal Hessian)."""
        import torch

        grad = torch.zeros_like(x)
        curv = torch.zeros_like(x) if curvature else None
        g, eps = self.gamma, self.eps
        for a, b, pw in self.pairs:
            xa, xb = x[a], x[b]
            d = xa - xb
            gad = g * d.abs()
            den = xa + xb + gad + eps
            scale = pw * d / (den * den)
            grad[a] += scale * (xa + 3.0 * xb + gad + 2.0 * eps)
            grad[b] -= scale * (xb + 3.0 * xa + gad + 2.0 * eps)
            if curvature:
                h = 2.0 * pw / (den * den * den)
                curv[a] += h * (2.0 * xb + eps) ** 2
                curv[b] += h * (2.0 * xa + eps) ** 2
        return (grad, curv) if curvature else grad


def modified_em(x, back, sens, grad, curv, anchor, beta_subset: float):
    """One subset's MAP update of every voxel (module docstring).

    Params:
        x: current image; back: the subset's back-projected ratio A_S^T(m y / ybar);
        sens: the subset's sensitivity A_S^T m; grad, curv: the prior's gradient and diagonal
        Hessian at ``anchor`` (the image the subset starts from); beta_subset: beta / n.
    Returns:
        The updated image (0 where the sensitivity is 0).
    """
    import torch

    a = beta_subset * curv
    b = sens + beta_subset * (grad - curv * anchor)
    c = x * back
    den = b + torch.sqrt(b * b + 4.0 * a * c)
    return torch.where((sens > 0) & (den > 0), 2.0 * c / den.clamp_min(1e-30), torch.zeros_like(x))
