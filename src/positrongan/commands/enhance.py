"""``positrongan enhance``: train one enhancement method (one seed) on the train split, select on
val, and enhance every test slice at every count fraction -> ``enhance/{method}/seed{seed}.npz``
(the contract of docs/contract.md) and a figure of the test slices."""

from __future__ import annotations

import argparse
import json
import logging
import time

import numpy as np

from ..config import derived_seed
from ..errors import ArtifactError, ConfigError
from ..io import load_npz, save_npz

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--method", required=True, help="ours, unet, pix2pix, gaussian, osem_early or map_rdp (enhancement.methods)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="training seed (enhancement.seeds; gaussian, osem_early, map_rdp: 0)"
    )
    parser.add_argument("--dataset", required=True, metavar="NPZ", help="dataset/positron.npz with short-scan twins")
    parser.add_argument("--features", metavar="NPZ", help="features/positron_features.npz (the memory; ours)")
    parser.add_argument(
        "--candidates",
        nargs="+",
        metavar="NPZ",
        help="osem_early: recon/lowcount/{scan}_f{f}_iterations.npz; map_rdp: recon/map/{scan}_f{f}.npz "
        "(every scan and fraction)",
    )
    parser.add_argument("--out", required=True, metavar="NPZ", help="enhance/{method}/seed{seed}.npz to write")
    parser.add_argument("--figure", metavar="PNG", help="enhance/{method}/seed{seed}.png to write")


def run(args: argparse.Namespace, cfg: dict) -> None:
    import torch

    from ..enhance.classical import gaussian, tune_sigma
    from ..enhance.data import load_pairs
    from ..enhance.fit import CLASSICAL, METHODS, fit, predict
    from ..enhance.report import write_figure
    from ..runtime import torch_device

    ecfg = cfg["enhancement"]
    method = args.method
    if method not in METHODS:
        raise ConfigError(f"--method {method!r}: must be one of {METHODS}")
    if method in CLASSICAL and args.seed != 0:
        raise ConfigError(f"--method {method} is deterministic: only --seed 0 is run")
    pairs = load_pairs(args.dataset)
    train, val, test = pairs["train"], pairs["val"], pairs["test"]
    if len(test) == 0:
        raise ArtifactError(f"{args.dataset}: the test split is empty; nothing to enhance (use 3 or more scans)")
    fractions = test.fractions
    extra: dict = {}
    if method == "gaussian":
        if len(val) == 0:
            raise ArtifactError(f"{args.dataset}: the val split is empty; the Gaussian's sigma is tuned on it")
        device = torch.device("cpu")
        t0 = time.perf_counter()
        sigmas = np.asarray(ecfg["gaussian_sigmas"], dtype=np.float64)
        best, scores = [], []
        for j in range(len(fractions)):
            s, sc = tune_sigma(val.low[:, j], val.reference, sigmas)
            best.append(s)
            scores.append(sc)
            log.info("gaussian, fraction %g: sigma %.2f px (val PSNR %.2f dB)", fractions[j], s, sc.max())
        train_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        enhanced = np.stack([gaussian(test.low[:, j], best[j]) for j in range(len(fractions))], axis=1)
        infer = time.perf_counter() - t0
        extra = {"sigma_px": np.array(best), "val_psnr": np.array(scores), "sigmas_px": sigmas}
    elif method in ("osem_early", "map_rdp"):
        if len(val) == 0:
            raise ArtifactError(f"{args.dataset}: the val split is empty; {method} chooses its setting on it")
        if not args.candidates:
            raise ConfigError(f"--method {method} needs --candidates (the candidates files of every scan and fraction)")
        device = torch.device("cpu")
        enhanced, train_seconds, infer, extra = tune_candidates(args, method, val, test, fractions)
    else:
        device = torch_device(cfg["device"])
        memory = None
        if method == "ours":
            if not args.features:
                raise ConfigError("--method ours needs --features (features/positron_features.npz)")
            memory = load_npz(args.features, required=("memory",))["memory"].astype(np.float32)
        result = fit(method, ecfg, train, val, memory, derived_seed(cfg, "enhance", method, args.seed), device)
        train_seconds = result.train_seconds
        predict(result.net, test.low[:1], fractions, device)  # warm-up: first-call allocations are not inference
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        enhanced = predict(result.net, test.low, fractions, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        infer = time.perf_counter() - t0
        extra = {
            "best_iteration": np.int64(result.best_iteration),
            "history": np.array(json.dumps(result.history)),
            "parameters": np.int64(sum(p.numel() for p in result.net.parameters())),
        }
    per_slice = infer / enhanced[:, :, 0, 0].size
    save_npz(
        args.out,
        enhanced=enhanced.astype(np.float32),
        index=test.index.astype(np.int64),
        fractions=fractions.astype(np.float64),
        method=np.array(method),
        seed=np.int64(args.seed),
        train_seconds=np.float64(train_seconds),
        infer_seconds_per_slice=np.float64(per_slice),
        device=np.array(str(device)),
        threads=np.int64(torch.get_num_threads()),
        iterations=np.int64(ecfg["iterations"] if method not in CLASSICAL else 0),
        batch_size=np.int64(ecfg["batch_size"] if method not in CLASSICAL else 0),
        **extra,
    )
    log.info(
        "%s seed %d: %d test slices x %d fractions, train %.1f s, inference %.2f ms per slice (%s) -> %s",
        method,
        args.seed,
        len(test),
        len(fractions),
        train_seconds,
        1e3 * per_slice,
        device,
        args.out,
    )
    if args.figure:
        data = load_npz(args.dataset, required=("truth", "defect_labels", "scan", "plane"))
        write_figure(args.figure, method, args.seed, enhanced, test, data)


def tune_candidates(args, method: str, val, test, fractions) -> tuple:
    """``osem_early`` / ``map_rdp``: the candidate per fraction with the best mean val PSNR
    (``enhance/candidates.py``), and its test slices.

    Returns:
        (enhanced (N_test, F, S, S), tuning seconds, seconds to take the test slices, extra arrays).
    """
    from ..enhance.candidates import CandidateFiles, check_against_dataset, tune

    data = load_npz(args.dataset, required=("scan", "plane", "low_count"))
    files = CandidateFiles(args.candidates)
    t0 = time.perf_counter()
    cands = files.stack(data, val.index, fractions)
    diff = check_against_dataset(files, cands, val.low, args.dataset)
    if diff is not None:
        log.info("the reconstruction's own setting matches the dataset's low-count val slices within %.2g", diff)
    chosen, scores = [], []
    it, fw, be = files.settings.T
    for j, f in enumerate(fractions):
        c, sc = tune(cands[:, j], val.reference)
        chosen.append(c)
        scores.append(sc)
        log.info(
            "%s, fraction %g: %d iterations, FWHM %g mm, beta %g (val PSNR %.2f dB; the reconstruction's own: %s)",
            method,
            f,
            int(it[c]),
            fw[c],
            be[c],
            sc[c],
            "n/a" if diff is None else f"{psnr_of_own(files, sc):.2f} dB",
        )
    del cands
    train_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    enhanced = np.clip(files.stack(data, test.index, fractions, pick=np.array(chosen)), 0.0, 1.0)
    infer = time.perf_counter() - t0
    seconds = [float(load_npz(p, required=("seconds",))["seconds"]) for p in files.paths.values()]
    chosen = np.array(chosen, dtype=np.int64)
    extra = {
        "val_psnr": np.array(scores),
        "candidate_iterations": it.astype(np.int64),
        "candidate_fwhm_mm": fw,
        "candidate_beta": be,
        "chosen": chosen,
        "chosen_iterations": it[chosen].astype(np.int64),
        "chosen_fwhm_mm": fw[chosen],
        "chosen_beta": be[chosen],
        "recon_seconds": np.float64(np.mean(seconds)),
    }
    return enhanced.astype(np.float32), train_seconds, infer, extra


def psnr_of_own(files, scores) -> float:
    """The val PSNR of the candidate that is the low-count reconstruction's own setting."""
    head = load_npz(next(iter(files.paths.values())), required=("reference_iterations", "reference_fwhm_mm"))
    it, fw, be = files.settings.T
    own = np.flatnonzero(
        (it == float(head["reference_iterations"])) & np.isclose(fw, float(head["reference_fwhm_mm"])) & (be == 0)
    )
    return float(scores[own[0]]) if len(own) else float("nan")
