"""Helpers shared by the tests: small image sets, configs and output folders, and the files
a training command reads. Tests import from here, never from each other."""

import csv
import math

import numpy as np
import torch
from scipy import stats

from positrongan.cli import main
from positrongan.config import validate
from positrongan.io import save_npz
from positrongan.simulate.driver import draw_phantom, engine_parts, make_engine, run_scan
from positrongan.train.loop import Outputs


def rings(n, size=32, seed=0):
    """n noisy elliptical rings in [0, 1], a stand-in for positron images of the tube."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    out = []
    for _ in range(n):
        a, b = rng.uniform(0.25, 0.4), rng.uniform(0.2, 0.35)
        r = np.sqrt((xx / a) ** 2 + (yy / b) ** 2)
        img = np.exp(-(((r - 1) / 0.2) ** 2)) + 0.1 * rng.random((size, size))
        out.append(img / img.max())
    return np.array(out, dtype=np.float32)


def small_cfg(**over):
    cfg = validate({})["training"]
    cfg.update(batch_size=8, g_channels=16, growth_rate=4, dense_layers=2, d_channels=8, noise_dim=4)
    cfg.update(over)
    return cfg


def tiny_set(n=12, size=32):
    return torch.from_numpy(rings(n, size))[:, None] * 2 - 1


def outputs(path):
    path.mkdir(parents=True, exist_ok=True)
    return Outputs(path / "generator.pt", path / "checkpoint.pt", path / "losses.csv", path / "samples.png")


def read_rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def training_files(tmp_path, n=16, size=32):
    data = tmp_path / "positron.npz"
    split = np.array(["train"] * (n - 4) + ["test"] * 4)
    save_npz(data, images=rings(n, size), split=split)
    feats = tmp_path / "features.npz"
    assert (
        main(["extract-features", "--dataset", str(data), "--out", str(feats), "--set", "features.components=4"]) == 0
    )
    lat = tmp_path / "latents.npz"
    rng = np.random.default_rng(0)
    save_npz(
        lat,
        mu=rng.normal(size=(30, 8)).astype(np.float32),
        logvar=np.full((30, 8), -1.0, np.float32),
        names=np.array([f"ct{i}" for i in range(30)]),
    )
    return data, feats, lat


SMALL = [
    "--set",
    "training.iterations=3",
    "--set",
    "training.batch_size=4",
    "--set",
    "training.g_channels=16",
    "--set",
    "training.growth_rate=4",
    "--set",
    "training.dense_layers=2",
    "--set",
    "training.d_channels=8",
    "--set",
    "evaluation.samples=10",
    "--set",
    "device=cpu",
]


def train_args(tmp_path, method, data, extra=()):
    out = tmp_path / method
    return [
        "train",
        "--method",
        method,
        "--dataset",
        str(data),
        *extra,
        "--generator",
        str(out / "generator.pt"),
        "--checkpoint",
        str(out / "checkpoint.pt"),
        "--losses",
        str(out / "losses.csv"),
        "--samples",
        str(out / "samples.png"),
        *SMALL,
    ]


def uniform_tube(**overrides):
    """A straight tube whose wall has the same thickness all round (known path lengths)."""
    from positrongan.geometry.phantom import TubePhantom

    args = dict(
        length_mm=100.0,
        a_mm=30.0,
        b_mm=20.0,
        wall_mm=3.0,
        wall_variation=0.0,
        wall_phase=0.0,
        psi=0.0,
        bend_mm=0.0,
        bend_direction=0.0,
        deposit_material="CaCO3",
    )
    return TubePhantom(**{**args, **overrides})


def ring_engine(kernel, tube, **sections):
    """The fast engine (``kernel``: numba | numpy) of ``tube`` in a small scanner (96 crystals x 8
    rings); ``sections`` replace config sections (``simulation={...}``)."""
    cfg = validate({"scanner": {"crystals_per_ring": 96, "rings": 8}, **sections})
    return make_engine(kernel, *engine_parts(cfg, tube))


def radial_photons(n, radius, rng):
    """n 511 keV photons leaving the axis radially in the transverse plane, at ``radius`` mm."""
    from positrongan.simulate.fast import Photons

    phi = rng.uniform(0, 2 * np.pi, n)
    d = np.stack([np.cos(phi), np.sin(phi), np.zeros(n)], axis=1)
    return Photons(
        pos=d * radius,
        dir=d.copy(),
        energy=np.full(n, 0.511),
        path=np.zeros(n),
        scatters=np.zeros(n, np.int16),
        alive=np.ones(n, bool),
    )


def fast_scan(tmp_path, kernel, seed, decays=300_000, **sim):
    """A seeded fast-engine scan of the default phantom (scan_000, seed 0 for every kernel): (info, ROOT path)."""
    cfg = validate({"seed": seed, "simulation": {"engine": "fast", "kernel": kernel, "write_singles": True, **sim}})
    cfg["phantom"]["acquisition_s"] = decays / cfg["phantom"]["activity_bq"]
    tube = draw_phantom(validate({"seed": 0}), "scan_000")  # the same phantom for every kernel
    root = tmp_path / f"{kernel}_{seed}.root"
    info = run_scan(cfg, "scan_000", tube, root)
    return info, root


def two_sample_chi2(x, y, edges):
    """Chi-square test that two samples come from one distribution (unequal sizes)."""
    a, _ = np.histogram(x, edges)
    b, _ = np.histogram(y, edges)
    ok = (a + b) > 0
    a, b = a[ok], b[ok]
    ka, kb = math.sqrt(b.sum() / a.sum()), math.sqrt(a.sum() / b.sum())
    chi2 = np.sum((ka * a - kb * b) ** 2 / (a + b))
    return stats.chi2.sf(chi2, ok.sum() - 1)


def assert_same_rates(a, b):
    """Two independent scans' infos (:func:`fast_scan`) agree per decay in every count (~Poisson)
    and in scatter fraction (a binomial proportion among trues + scatters), within 5 SD."""
    for key in ("singles", "prompts", "trues", "scatters", "randoms", "delayed"):
        ra, rb = a[key] / a["decays"], b[key] / b["decays"]
        sigma = math.sqrt(a[key] / a["decays"] ** 2 + b[key] / b["decays"] ** 2)
        assert abs(ra - rb) < 5 * sigma, (key, a[key], b[key], a["decays"], b["decays"])
    pa = a["scatters"] / (a["trues"] + a["scatters"])
    pb = b["scatters"] / (b["trues"] + b["scatters"])
    sd = math.sqrt(pa * (1 - pa) / (a["trues"] + a["scatters"]) + pb * (1 - pb) / (b["trues"] + b["scatters"]))
    assert abs(pa - pb) < 5 * sd, (pa, pb)
