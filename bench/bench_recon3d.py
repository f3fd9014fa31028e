"""Benchmark: fully 3D OSEM (reconstruction.mode: 3d) against the 2D mode (single-slice
rebinning + 2D OSEM) on the same simulated scans, in the same run; seconds per iteration at one
and two threads, setup costs, prompts used, and the defects' CRC/CNR of both images.

Scans come from ``positrongan simulate`` (default config: ~7e5 prompts per scan; add
``--set phantom.acquisition_s=10`` for ~7e6)::

    positrongan simulate --config config/config.yaml --scan scan_000 --root /tmp/x/scan_000.root \\
        --meta /tmp/x/scan_000.json --truth /tmp/x/scan_000_truth.npz
    python bench/bench_recon3d.py --scan /tmp/x/scan_000.root /tmp/x/scan_000_truth.npz [--scan ...]

Prints one JSON object. Wall and CPU (``time.process_time``) seconds are both given: on a
shared machine CPU seconds are the figure to compare.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np


def timed(fn, *args, **kw):
    w, c = time.perf_counter(), time.process_time()
    out = fn(*args, **kw)
    return out, time.perf_counter() - w, time.process_time() - c


def scores(image, truth, cfg):
    """Per-defect CRC/CNR of the post-filtered image (recon/detectability.py), or None."""
    from positrongan.recon.detectability import score_scan

    rows = score_scan(image, truth, cfg["dataset"])
    if rows is None:
        return None
    return [
        {k: (round(r[k], 3) if isinstance(r[k], float) else r[k]) for k in ("defect", "type", "size_mm", "crc", "cnr")}
        for r in rows
    ]


def fluid_noise(image, truth):
    """Relative standard deviation of the image in fluid voxels away from walls and defects."""
    from scipy import ndimage

    fluid = ndimage.binary_erosion(truth["activity"] >= 0.999, iterations=3)
    if "defect_index" in truth:
        fluid &= ~ndimage.binary_dilation(truth["defect_index"] > 0, iterations=4)
    vals = image[fluid]
    return float(vals.std() / vals.mean())


def bench_scan(root, truth_path, cfg, threads_list, timing_iterations):
    import torch

    from positrongan.geometry.scanner import Scanner
    from positrongan.recon.attenuation import attenuation_factors, randoms_estimate
    from positrongan.recon.lors import read_coincidences, rebin
    from positrongan.recon.mlem import reconstruct
    from positrongan.recon.osem3d import fan_sum_randoms, reconstruct_3d
    from positrongan.recon.projector import build_system_model
    from positrongan.recon.projector3d import RingProjector3D
    from positrongan.geometry.grid import ReconGrid
    from positrongan.recon.driver import RANDOMS_SMOOTHING, load_truth, postfilter

    rc = cfg["reconstruction"]
    scanner = Scanner.from_config(cfg["scanner"])
    grid = ReconGrid.from_config(scanner, rc)
    truth = load_truth(truth_path, grid)
    (c1, c2), read_s, _ = timed(read_coincidences, root, scanner)
    d1, d2 = read_coincidences(root, scanner, "Delayed")
    mu = truth["mu"].astype(np.float32)
    subsets = rc["subsets"] if rc["algorithm"] == "osem" else 1
    iters = rc["iterations"]
    voxel = grid.voxel_mm
    out = {"root": str(root), "prompts_read": len(c1), "delayed_read": len(d1), "read_seconds": read_s}
    images = {}
    for threads in threads_list:
        torch.set_num_threads(threads)

        # ---- 3D ----
        def setup3d():
            proj = RingProjector3D(
                scanner, rc["fov_mm"], rc["grid"], rc["doi_mm"], "cpu", subsets, rc["step_voxels"], rc["lors_per_batch"]
            )
            y, n = proj.histogram(c1, c2)
            r, _ = fan_sum_randoms(proj, d1, d2)
            a = torch.exp(-proj.forward(torch.from_numpy(mu)))
            return proj, y, n, r, a, proj.obliquity()

        (proj, y, n3, r3, a3, norm), s3w, s3c = timed(setup3d)
        n_it = iters if threads == threads_list[0] else timing_iterations
        res3, w3, c3 = timed(reconstruct_3d, proj, y, n_it, a3, r3, norm, show_progress=False)

        # ---- 2D ----
        def setup2d():
            model = build_system_model(scanner, rc, cfg["scanner"])
            sino, stats = rebin(c1, c2, scanner, model.geometry, rc["max_ring_difference"])
            dsino, _ = rebin(d1, d2, scanner, model.geometry, rc["max_ring_difference"])
            return model, sino, stats, randoms_estimate(dsino, RANDOMS_SMOOTHING), attenuation_factors(model, mu)

        (model, sino, stats, r2, a2), s2w, s2c = timed(setup2d)
        res2, w2, c2_ = timed(
            reconstruct, model, sino, n_it, subsets, attenuation=a2, randoms=r2, device="cpu", show_progress=False
        )
        out[f"threads_{threads}"] = {
            "iterations_timed": n_it,
            "3d": {
                "seconds_per_iteration": res3.seconds / n_it,
                "cpu_seconds_per_iteration": res3.info["cpu_seconds"] / n_it,
                "setup_seconds": s3w + res3.info["setup_seconds"],
                "setup_cpu_seconds": s3c,
                "lors": proj.shape[0] * proj.shape[1],
            },
            "2d": {
                "seconds_per_iteration": res2.seconds / n_it,
                "cpu_seconds_per_iteration_incl_projector_setup": c2_ / n_it,
                "setup_seconds_incl_system_model": s2w,
                "setup_cpu_seconds": s2c,
            },
        }
        if threads == threads_list[0]:
            images = {"3d": res3.image, "2d": res2.image}
            out["prompts_used"] = {"3d": n3, "2d": stats["kept"]}
            out["prompts_used_fraction"] = {"3d": n3 / len(c1), "2d": stats["kept"] / len(c1)}
            out["iterations"] = iters
            out["subsets"] = subsets
    for mode, img in images.items():
        filt = postfilter(img, voxel, rc["postfilter_fwhm_mm"])
        out[f"image_{mode}"] = {
            "fluid_relative_std_filtered": fluid_noise(filt, truth),
            "fluid_relative_std_unfiltered": fluid_noise(img, truth),
            "defects": scores(filt, truth, cfg),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan", nargs=2, action="append", metavar=("ROOT", "TRUTH"), required=True)
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--timing-iterations", type=int, default=3, help="iterations timed at the other thread counts")
    args = parser.parse_args()

    import torch

    from positrongan.config import load

    cfg = load([args.config])
    result = {
        "benchmark": "recon_3d_vs_2d",
        "config": args.config,
        "grid": [2 * cfg["scanner"]["rings"] - 1, cfg["reconstruction"]["grid"], cfg["reconstruction"]["grid"]],
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "scans": [bench_scan(Path(r), Path(t), cfg, args.threads, args.timing_iterations) for r, t in args.scan],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
