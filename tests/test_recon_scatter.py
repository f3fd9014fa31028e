"""Scatter model of the 3D reconstruction (recon/scatter.py): the tail fit recovers a known
scatter term, and on a simulated uniform tube the scatter-corrected image loses the background
outside the part and matches a reconstruction of the trues alone."""

import json

import numpy as np
import pytest
import torch

from positrongan.geometry.scanner import Scanner
from positrongan.recon.projector3d import RingProjector3D
from positrongan.recon.scatter import ScatterModel

SCANNER = Scanner(crystals_per_ring=96, rings=8)


def tube_maps(proj, radius=14.0):
    z, y, x = np.meshgrid(
        *(
            proj.image_grid.origin_mm[k] + np.arange(n) * proj.image_grid.voxel_mm[k]
            for k, n in enumerate(proj.image_grid.shape)
        ),
        indexing="ij",
    )
    inside = (np.hypot(x, y) < radius) & (np.abs(z) < 10)
    return inside.astype(np.float64), 0.0096 * inside


def test_tail_fit_recovers_a_known_scatter_term():
    proj = RingProjector3D(SCANNER, 96.0, 24, 0.0, dtype=torch.float64)
    act, mu = tube_maps(proj)
    model = ScatterModel(proj, torch.as_tensor(mu))
    assert 0.2 < model.tail_fraction < 0.95
    assert model.radius_mm == pytest.approx(14.0, abs=4.0)
    # Tails miss the part: the true line integrals vanish there.
    line = proj.forward(torch.as_tensor(act))
    assert float(line[model.tail].abs().max()) == 0.0
    trues = line * torch.exp(-proj.forward(torch.as_tensor(mu)))
    beta = model.widths[1]
    scatter = 0.3 * float(trues.sum()) / float(model.blur(trues, beta).sum()) * model.blur(trues, beta)
    randoms = torch.full_like(trues, 0.01 * float(trues.mean()))
    prompts = trues + scatter + randoms  # noise-free: the expectation
    est, info = model.estimate(trues, prompts, randoms)
    assert info["beta_mm"] == beta
    assert float(est.sum()) == pytest.approx(float(scatter.sum()), rel=1e-6)
    assert info["fraction"] == pytest.approx(float(scatter.sum() / prompts.sum()), rel=1e-6)


def test_blur_is_linear_and_self_adjoint():
    proj = RingProjector3D(SCANNER, 96.0, 24, 0.0, dtype=torch.float64)
    _, mu = tube_maps(proj)
    model = ScatterModel(proj, torch.as_tensor(mu))
    rng = np.random.default_rng(0)
    a = torch.as_tensor(rng.random(proj.shape))
    b = torch.as_tensor(rng.random(proj.shape))
    beta = model.widths[0]
    # The kernel is symmetric (exp(-|d| / beta) along each axis), so K = K^T.
    assert float((model.blur(a, beta) * b).sum()) == pytest.approx(float((a * model.blur(b, beta)).sum()), rel=1e-10)
    assert torch.allclose(model.blur(2 * a + b, beta), 2 * model.blur(a, beta) + model.blur(b, beta))


NONE = {"count": [0, 0]}
TUBE = {
    "scanner": {"crystals_per_ring": 128, "rings": 16},
    "simulation": {"engine": "fast", "write_truth": True, "kernel": "numpy"},
    "reconstruction": {"grid": 48, "fov_mm": 96.0, "mode": "3d"},
    "phantom": {
        "activity_bq": 2.0e6,
        "acquisition_s": 1.0,
        "length_mm": 40.0,
        "outer_semi_axes_mm": [25.0, 25.0],
        "wall_thickness_mm": 3.0,
        "wall_variation": 0.0,
        "bend_mm": [0.0, 0.0],
        "defects": {"cracks": NONE, "pits": NONE, "blockages": NONE, "bubbles": NONE},
    },
}


@pytest.mark.slow
def test_scatter_model_removes_the_background_of_a_uniform_tube(tmp_path):
    import uproot

    from positrongan import config as configlib
    from positrongan.cli import main
    from positrongan.rootfile import read_tree
    from positrongan.simulate.driver import simulate_scan

    cfg = configlib.validate(json.loads(json.dumps(TUBE)))
    root, truth = tmp_path / "s.root", tmp_path / "t.npz"
    info = simulate_scan(cfg, "scan_000", root, tmp_path / "s.json", truth)
    assert info["scatters"] / info["prompts"] > 0.1
    c = read_tree(
        root,
        "Coincidences",
        ["CrystalID1", "CrystalID2", "EventID1", "EventID2", "PhantomScatters1", "PhantomScatters2"],
    )
    trues = (c["EventID1"] == c["EventID2"]) & (c["PhantomScatters1"] == 0) & (c["PhantomScatters2"] == 0)
    with uproot.recreate(tmp_path / "trues.root") as fh:
        fh["Coincidences"] = {"CrystalID1": c["CrystalID1"][trues], "CrystalID2": c["CrystalID2"][trues]}
    sets = [
        "scanner.crystals_per_ring=128",
        "scanner.rings=16",
        "reconstruction.grid=48",
        "reconstruction.fov_mm=96.0",
        "reconstruction.mode=3d",
        "reconstruction.iterations=6",
        "reconstruction.subsets=2",
        "reconstruction.dicom=false",
        "reconstruction.postfilter_fwhm_mm=0",
        "phantom.acquisition_s=1.0",
        "phantom.outer_semi_axes_mm=[25.0, 25.0]",
        "phantom.bend_mm=[0.0, 0.0]",
        "device=cpu",
    ]

    def recon(name, src, *extra):
        out = tmp_path / f"{name}.npz"
        args = ["reconstruct", "--scan", "scan_000", "--root", str(src), "--truth", str(truth), "--out", str(out)]
        for s in [*sets, *extra]:
            args += ["--set", s]
        assert main(args) == 0
        return np.load(out)

    act = np.load(truth)["activity"]
    g = np.arange(48) * 2.0 - 47.0
    rr = np.hypot(g[:, None], g[None, :])
    planes = np.flatnonzero(act.sum((1, 2)) > 0)[3:-3]
    fluid, background = rr < 18.0, (rr > 30.0) & (rr < 46.0)

    def levels(z):
        img = z["image"][planes]
        f = img[:, fluid].mean()
        return f, img[:, background].mean() / f

    f_plain, bg_plain = levels(recon("plain", root))
    scat = recon("scatter", root, "reconstruction.scatter_correction=true")
    f_scat, bg_scat = levels(scat)
    f_true, bg_true = levels(recon("trues", tmp_path / "trues.root", "reconstruction.randoms_correction=false"))
    print(
        f"background/fluid: {bg_plain:.4f} -> {bg_scat:.4f} (trues {bg_true:.4f}); fluid vs trues: "
        f"{f_plain / f_true - 1:+.4f} -> {f_scat / f_true - 1:+.4f}; scatter fraction "
        f"{float(scat['scatter_fraction']):.4f} (truth {info['scatters'] / info['prompts']:.4f})"
    )
    assert bg_plain > 0.012 and bg_scat < 0.01
    assert abs(f_scat / f_true - 1) < 0.03
    assert abs(f_plain / f_true - 1) > abs(f_scat / f_true - 1)
    assert list(scat["corrections"]) == ["ATTN", "SCAT", "RAN"] and bool(scat["scatter_corrected"])
    assert float(scat["scatter_fraction"]) == pytest.approx(info["scatters"] / info["prompts"], abs=0.04)
