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


def blur_matrix(kernel: np.ndarray, n: int) -> np.ndarray:
    """(n, n): the 1D convolution of a length-n axis with the odd, symmetric ``kernel``, zero
    outside the axis (the taps that fall off an edge are dropped), as a banded symmetric matrix."""
    half = (kernel.size - 1) // 2
    offset = np.arange(n)[None, :] - np.arange(n)[:, None]
    return np.where(np.abs(offset) <= half, kernel[np.clip(offset + half, 0, kernel.size - 1)], 0.0)


class GaussianPSF:
    """H x: a separable 3D Gaussian blur of FWHM ``fwhm_mm`` on an image of ``voxel_mm``
    (dz, dy, dx), zero outside the image. Self-adjoint: <H x, y> = <x, H y>.

    Each axis's blur is a product with its banded matrix (:func:`blur_matrix`) rather than a
    convolution: BLAS runs the dense products ~20x faster than ``conv3d`` runs the same 1D kernels on
    one CPU core (the single-channel 3D convolution had taken a third of the default OSEM's
    iterations; ``bench/bench_psf.py``, docs/benchmarks.md). The matrices need the image's shape,
    so they are built on first use for each shape, dtype and device of the images it blurs.

    Params:
        voxel_mm: (dz, dy, dx) voxel size [mm].
        fwhm_mm: the blur's FWHM [mm], the same in every direction (> 0).
    """

    def __init__(self, voxel_mm, fwhm_mm: float):
        if not fwhm_mm > 0:
            raise ValueError(f"PSF FWHM must be > 0 mm, got {fwhm_mm}")
        self.fwhm_mm = float(fwhm_mm)
        self.kernels = [gaussian_kernel(self.fwhm_mm / FWHM_PER_SIGMA / float(size)) for size in voxel_mm]
        self._matrices = {}

    def matrices(self, shape, dtype, device):
        """The three axes' blur matrices for an image of ``shape`` (planes, ny, nx)."""
        import torch

        key = (tuple(shape), dtype, str(device))
        if key not in self._matrices:
            self._matrices[key] = [
                torch.as_tensor(blur_matrix(k, n), dtype=dtype, device=device) for k, n in zip(self.kernels, shape)
            ]
        return self._matrices[key]

    def __call__(self, image):
        """The blurred (planes, ny, nx) tensor."""
        import torch

        planes, ny, nx = image.shape
        mz, my, mx = self.matrices(image.shape, image.dtype, image.device)
        x = (mz @ image.reshape(planes, ny * nx)).reshape(planes, ny, nx)
        x = torch.matmul(my, x)  # the same (ny, ny) matrix on every plane
        return x @ mx  # symmetric: the product from the right is the blur along x too
