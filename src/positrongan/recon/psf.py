"""Image-space resolution modelling for the 3D OSEM (``reconstruction.psf_fwhm_mm``).

The projector follows each LOR's centre line, so the reconstruction assumes perfect detectors;
the scanner blurs by the crystal width, the photons' depth of interaction, their acollinearity
and the positron range. A stationary Gaussian H in image space is the usual first-order model
of that blur (Reader et al. 2003; Panin et al. 2006): the system becomes A H, and since H is a
symmetric convolution with zero padding, (A H)^T = H A^T. Modelled resolution raises the
contrast of structures near the resolution (the cracks of docs/detectability.md) at the price
of edge overshoot (Gibbs) and slower convergence, which the post-filter and the iteration
count trade against.
"""

from __future__ import annotations

import math

import numpy as np

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
TRUNCATE = 3.0  # kernel half-width in sigmas (the weight beyond is < 0.3 %)


def gaussian_kernel(sigma_voxels: float) -> np.ndarray:
    """A normalised, symmetric 1D Gaussian of ``sigma_voxels``, sampled at integer offsets."""
    half = max(1, int(math.ceil(TRUNCATE * sigma_voxels)))
    t = np.arange(-half, half + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma_voxels) ** 2)
    return k / k.sum()


class GaussianPSF:
    """H x: a separable 3D Gaussian blur of FWHM ``fwhm_mm`` on an image of ``voxel_mm``
    (dz, dy, dx), zero outside the image. Self-adjoint: <H x, y> = <x, H y>.

    Params:
        voxel_mm: (dz, dy, dx) voxel size [mm].
        fwhm_mm: the blur's FWHM [mm], the same in every direction (> 0).
        device, dtype: where and how the image tensors are held.
    """

    def __init__(self, voxel_mm, fwhm_mm: float, device=None, dtype=None):
        import torch

        if not fwhm_mm > 0:
            raise ValueError(f"PSF FWHM must be > 0 mm, got {fwhm_mm}")
        self.fwhm_mm = float(fwhm_mm)
        self.kernels = []
        for axis, size in enumerate(voxel_mm):
            k = torch.as_tensor(gaussian_kernel(self.fwhm_mm / FWHM_PER_SIGMA / float(size)), dtype=dtype, device=device)
            shape = [1, 1, 1, 1, 1]
            shape[2 + axis] = k.numel()
            self.kernels.append(k.reshape(shape))

    def __call__(self, image):
        """The blurred (planes, ny, nx) tensor."""
        import torch.nn.functional as F

        x = image[None, None]
        for k in self.kernels:
            pad = [(s - 1) // 2 for s in k.shape[2:]]
            x = F.conv3d(x, k.to(x.dtype), padding=pad)
        return x[0, 0]
