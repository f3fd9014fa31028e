"""Benchmark: the 3D OSEM's resolution model (``reconstruction.psf_fwhm_mm``), one blur of a
default-sized image, as :class:`positrongan.recon.psf.GaussianPSF` applies it (a banded matrix
product per axis) against the same separable Gaussian as three single-channel ``conv3d`` (what
it ran before 2026-11-28), in the same process. Each OSEM subset blurs twice (before the forward
projection, after the back projection): the default's 8 iterations x 4 subsets make 64 blurs, the
final likelihood pass 4 and the sensitivity images 4, so 72 per reconstruction. The FWHM is the
config's ``reconstruction.psf_fwhm_mm`` (4.5 mm when it is 0, the default's value).

Usage: python bench/bench_psf.py [--config config/config.yaml] [--threads 1] [--repeats 30]
       [--device cpu|cuda]

Prints one JSON object: milliseconds per blur (median of ``--repeats``), their ratio, and the
largest difference between the two images relative to the image's maximum.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from positrongan import config as configlib
from positrongan.geometry.grid import ReconGrid
from positrongan.geometry.scanner import Scanner
from positrongan.recon.psf import GaussianPSF


def conv3d_blur(psf: GaussianPSF, image):
    """The reference: the same kernels as three separable conv3d with zero padding."""
    x = image[None, None]
    for axis, k in enumerate(psf.kernels):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = k.size
        weight = torch.as_tensor(k, dtype=x.dtype, device=x.device).reshape(shape)
        pad = [(s - 1) // 2 for s in shape[2:]]
        x = F.conv3d(x, weight, padding=pad)
    return x[0, 0]


def per_call_ms(fn, image, repeats: int, device) -> float:
    fn(image)  # warm-up: the matrices are built, kernels chosen
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        fn(image)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    cfg = configlib.load([args.config])
    rc = cfg["reconstruction"]
    grid = ReconGrid.from_config(Scanner.from_config(cfg["scanner"]), rc)  # the 3D projector's image grid
    voxel, shape = [float(v) for v in grid.voxel_mm], grid.shape
    fwhm = rc["psf_fwhm_mm"] if rc["psf_fwhm_mm"] > 0 else 4.5
    psf = GaussianPSF(voxel, fwhm)
    image = torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(device)

    ref_ms = per_call_ms(lambda x: conv3d_blur(psf, x), image, args.repeats, device)
    new_ms = per_call_ms(psf, image, args.repeats, device)
    ref, new = conv3d_blur(psf, image), psf(image)
    print(
        json.dumps(
            {
                "machine": platform.processor() or platform.machine(),
                "torch": torch.__version__,
                "device": str(device),
                "threads": args.threads,
                "image": list(shape),
                "voxel_mm": list(voxel),
                "fwhm_mm": fwhm,
                "kernel_taps": [int(k.size) for k in psf.kernels],
                "repeats": args.repeats,
                "conv3d_ms": round(ref_ms, 3),
                "banded_matmul_ms": round(new_ms, 3),
                "speedup": round(ref_ms / new_ms, 2),
                "max_abs_difference_over_max": float((ref - new).abs().max() / ref.abs().max()),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
