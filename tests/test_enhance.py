"""Enhancement mode: networks, the Gaussian anchor, the quality measures with known answers,
the matched-budget training loop, and the two CLI stages end to end on a small synthetic set."""

import json

import numpy as np
import pytest
import torch

from helpers import read_rows
from positrongan.cli import main
from positrongan.config import validate
from positrongan.enhance.classical import gaussian, tune_sigma
from positrongan.enhance.data import load_pairs, network_input
from positrongan.enhance.fit import fit, predict
from positrongan.enhance.networks import (
    DenseMemoryUNet,
    UNet,
    build_generator,
    conditional_patch_discriminator,
    fraction_code,
)
from positrongan.enhance.quality import hallucination, masks, psnr
from positrongan.io import load_npz, save_npz

SIZE, PLANES = 32, 6
SCANS = {"scan_000": "train", "scan_001": "train", "scan_002": "train", "scan_003": "val", "scan_004": "test"}
FRACTIONS = [0.5, 0.1]


def tube(seed):
    """(activity, mu, defect_index, labels) of one scan: an elliptical fluid section in an
    aluminium wall, a blockage (no activity) in planes 2-3."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] - (SIZE - 1) / 2
    a, b = rng.uniform(9, 11), rng.uniform(7, 9)
    r = np.sqrt((xx / a) ** 2 + (yy / b) ** 2)
    fluid = (r < 1).astype(np.float32)
    wall = (r >= 1) & (r < 1.35)
    act = np.repeat(fluid[None], PLANES, 0)
    mu = np.repeat(np.where(wall, 0.0226, np.where(fluid > 0, 0.0096, 0.0))[None], PLANES, 0).astype(np.float32)
    idx = np.zeros((PLANES, SIZE, SIZE), np.uint8)
    blob = (xx - 2) ** 2 + (yy + 1) ** 2 <= 9
    for p in (2, 3):
        act[p][blob] = 0
        idx[p][blob] = 1
    labels = np.where(idx > 0, 3, 0).astype(np.uint8)
    return act, mu, idx, labels


def blur(img, s=1.0):
    from scipy import ndimage

    return ndimage.gaussian_filter(img, s)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A dataset npz with short-scan twins, truth npz files and a feature memory."""
    root = tmp_path_factory.mktemp("enh")
    rng = np.random.default_rng(0)
    cols = {k: [] for k in ("images", "truth", "defect_labels", "low_count", "scan", "plane", "split", "has_defect")}
    truth = {}
    for k, (scan, split) in enumerate(SCANS.items()):
        act, mu, idx, labels = tube(k)
        defects = [{"type": "blockage", "size": {"radius_mm": 3.0}}]
        truth[scan] = root / f"{scan}.npz"
        save_npz(
            truth[scan],
            activity=act,
            mu=mu,
            defects=labels,
            defect_index=idx,
            defect_list=np.array(json.dumps(defects)),
        )
        for p in range(PLANES):
            ref = np.clip(blur(act[p]), 0, 1).astype(np.float32)
            twins = [np.clip(rng.poisson(ref * 400 * f) / (400 * f), 0, None) for f in FRACTIONS]
            cols["images"].append(ref)
            cols["truth"].append(act[p])
            cols["defect_labels"].append(labels[p])
            cols["low_count"].append(twins)
            cols["scan"].append(scan)
            cols["plane"].append(p)
            cols["split"].append(split)
            cols["has_defect"].append(bool(idx[p].any()))
    data = root / "positron.npz"
    save_npz(
        data,
        images=np.array(cols["images"], np.float32),
        truth=np.array(cols["truth"], np.float32),
        defect_labels=np.array(cols["defect_labels"]),
        low_count=np.array(cols["low_count"], np.float32),
        low_count_fractions=np.array(FRACTIONS),
        scan=np.array(cols["scan"]),
        plane=np.array(cols["plane"], np.int64),
        split=np.array(cols["split"]),
        has_defect=np.array(cols["has_defect"]),
    )
    feats = root / "features.npz"
    save_npz(feats, memory=rng.normal(size=(18, 4)).astype(np.float32))
    return root, data, truth, feats


def ecfg(**over):
    c = validate({})["enhancement"]
    c.update(
        iterations=12,
        batch_size=4,
        val_every=4,
        val_pairs=8,
        unet_channels=4,
        unet_depth=2,
        dense_channels=4,
        dense_growth=4,
        dense_layers=1,
        dense_depth=2,
        query_dim=4,
        d_channels=4,
    )
    c.update(over)
    return c


# -- networks


def test_fraction_code_counts_missing_decades():
    assert fraction_code(0.1) == pytest.approx(0.5)
    assert fraction_code(0.01) == pytest.approx(1.0)
    assert fraction_code(1.0) == 0.0


@pytest.mark.parametrize("net", [UNet(32, 4, 3), DenseMemoryUNet(32, 4, 4, 1, 3, torch.randn(10, 6), 5)])
def test_networks_map_two_planes_to_one_image_in_range(net):
    x = torch.randn(3, 2, 32, 32)
    y = net(x)
    assert y.shape == (3, 1, 32, 32)
    assert float(y.detach().abs().max()) <= 1.0
    twin = build_generator(net.hparams)
    twin.load_state_dict(net.state_dict())
    net.eval()
    twin.eval()
    assert torch.equal(net(x), twin(x))


def test_memory_attention_is_a_distribution_and_the_memory_matters():
    torch.manual_seed(0)
    mem = torch.randn(10, 6) * 3
    net = DenseMemoryUNet(32, 4, 4, 1, 2, mem, 5).eval()
    x = torch.randn(4, 2, 32, 32)
    a = net.attention(x)
    assert a.shape == (4, 10)
    assert torch.allclose(a.sum(1), torch.ones(4))
    other = build_generator(net.hparams, memory=mem * 0 + 5.0).eval()
    other.load_state_dict({k: v for k, v in net.state_dict().items() if k != "memory.memory"}, strict=False)
    assert not torch.allclose(net(x), other(x))


def test_conditional_discriminator_judges_input_and_candidate():
    d = conditional_patch_discriminator(8, 1)
    assert d.receptive_field == 16
    assert d(torch.randn(2, 3, 32, 32)).shape == (2,)
    with pytest.raises(RuntimeError):
        d(torch.randn(2, 1, 32, 32))


def test_network_input_orders_slices_then_fractions():
    low = np.stack([np.full((2, 8, 8), v) for v in (0.0, 1.0, 9.0)]).astype(np.float32)  # (3, 2, 8, 8)
    x = network_input(low, np.array([0.1, 0.01]))
    assert x.shape == (6, 2, 8, 8)
    assert np.allclose(x[:, 0, 0, 0], [-1, -1, 1, 1, 7, 7])  # 2x - 1, clipped at 4
    assert np.allclose(x[:, 1, 0, 0], [0.5, 1.0] * 3)


# -- measures with known answers


def test_psnr_known_values():
    a = np.zeros((2, 8, 8))
    assert np.allclose(psnr(a, a + 0.1), 20.0)
    assert np.allclose(psnr(a, a + 0.01), 40.0)
    assert np.isinf(psnr(a, a)).all()


def test_gaussian_tuning_picks_no_filter_for_clean_and_a_filter_for_noise():
    rng = np.random.default_rng(1)
    act, *_ = tube(0)
    ref = np.repeat(blur(act[0], 2.0)[None], 6, 0)
    sigmas = [0.0, 0.5, 1.0, 2.0, 3.0]
    assert tune_sigma(ref, ref, sigmas)[0] == 0.0
    noisy = ref + rng.normal(0, 0.2, ref.shape)
    best, scores = tune_sigma(noisy, ref, sigmas)
    assert best >= 1.0
    assert scores.max() > scores[0] + 3  # filtering white noise of sigma 0.2 gains several dB
    assert np.allclose(gaussian(noisy, 0.0), np.clip(noisy, 0, 1))


def test_hallucination_measures_known_defects():
    act, mu, *_ = tube(0)
    m = masks(act[0], mu[0])
    ref = act[0].copy()
    perfect = hallucination(ref, ref, m)
    assert perfect == {"cold_spot": 0.0, "hot_spot": 0.0, "wall_ratio": 1.0}
    holed = ref.copy()
    fluid = np.flatnonzero(m["fluid"].ravel())
    holed.ravel()[fluid[:10]] = 0.0  # ten cold pixels in the core fluid
    assert hallucination(holed, ref, m)["cold_spot"] == pytest.approx(10 / len(fluid))
    leaky = ref.copy()
    leaky[m["wall_core"]] = 1.0  # fluid where the wall is: spurious crack, thinner wall
    h = hallucination(leaky, ref, m)
    assert h["hot_spot"] == 1.0
    assert h["wall_ratio"] < 1.0


# -- training


def test_fit_learns_to_denoise_and_is_seeded(synthetic):
    _, data, _, feats = synthetic
    pairs = load_pairs(data)
    torch.set_num_threads(1)
    mem = load_npz(feats)["memory"]
    c = ecfg(iterations=40, lr=2e-3)
    a = fit("unet", c, pairs["train"], pairs["val"], None, 7, "cpu")
    b = fit("unet", c, pairs["train"], pairs["val"], None, 7, "cpu")
    ta, tb = predict(a.net, pairs["test"].low, FRACTIONS, "cpu"), predict(b.net, pairs["test"].low, FRACTIONS, "cpu")
    assert np.array_equal(ta, tb)
    vals = [h["val_l1"] for h in a.history if "val_l1" in h]
    assert len(vals) == 10 and min(vals) < vals[0]
    assert 1 <= a.best_iteration <= 40
    for method in ("pix2pix", "ours"):
        r = fit(method, ecfg(), pairs["train"], pairs["val"], mem, 1, "cpu")
        assert {"loss_d", "loss_adv"} <= set(r.history[-1])
        assert ("loss_apg" in r.history[-1]) == (method == "ours")


def test_splits_never_mix(synthetic):
    _, data, _, _ = synthetic
    pairs = load_pairs(data)
    raw = load_npz(data)
    for name, p in pairs.items():
        assert set(raw["split"][p.index]) == {name}
    assert pairs["test"].low.shape == (PLANES, 2, SIZE, SIZE)


# -- CLI


def test_cli_enhance_and_evaluate(synthetic, tmp_path):
    root, data, truth, feats = synthetic
    common = [
        "--set",
        "enhancement.iterations=6",
        "--set",
        "enhancement.batch_size=4",
        "--set",
        "enhancement.val_every=3",
        "--set",
        "enhancement.unet_channels=4",
        "--set",
        "enhancement.unet_depth=2",
        "--set",
        "enhancement.dense_channels=4",
        "--set",
        "enhancement.dense_growth=4",
        "--set",
        "enhancement.dense_layers=1",
        "--set",
        "enhancement.dense_depth=2",
        "--set",
        "dataset.image_size=32",
        "--set",
        "dataset.slice_planes=1",
        "--set",
        "device=cpu",
        "--set",
        "evaluation.msssim_scales=2",
        "--threads",
        "1",
    ]
    outs = []
    for method in ("gaussian", "unet", "ours"):
        out = tmp_path / method / "seed0.npz"
        extra = ["--features", str(feats)] if method == "ours" else []
        argv = [
            "enhance",
            "--method",
            method,
            "--seed",
            "0",
            "--dataset",
            str(data),
            "--out",
            str(out),
            "--figure",
            str(out.with_suffix(".png")),
            *extra,
            *common,
        ]
        assert main(argv) == 0
        e = load_npz(out)
        test_rows = np.flatnonzero(load_npz(data)["split"] == "test")
        assert e["enhanced"].dtype == np.float32 and e["enhanced"].shape == (PLANES, 2, SIZE, SIZE)
        assert np.array_equal(e["index"], test_rows) and e["index"].dtype == np.int64
        assert np.allclose(e["fractions"], FRACTIONS)
        assert float(e["train_seconds"]) >= 0 and float(e["infer_seconds_per_slice"]) > 0
        assert out.with_suffix(".png").stat().st_size > 1000
        outs.append(str(out))
    assert (
        main(
            [
                "enhance",
                "--method",
                "gaussian",
                "--seed",
                "1",
                "--dataset",
                str(data),
                "--out",
                str(tmp_path / "x.npz"),
                *common,
            ]
        )
        == 2
    )
    assert main(["enhance", "--method", "ours", "--dataset", str(data), "--out", str(tmp_path / "x.npz"), *common]) == 2
    m = tmp_path / "m.csv"
    argv = [
        "evaluate-enhance",
        "--dataset",
        str(data),
        "--enhanced",
        *outs,
        "--truth",
        *map(str, truth.values()),
        "--metrics",
        str(m),
        "--runs",
        str(tmp_path / "r.csv"),
        "--defects",
        str(tmp_path / "d.csv"),
        "--table",
        str(tmp_path / "t.md"),
        *common,
    ]
    assert main(argv) == 0
    rows = {(r["method"], float(r["fraction"])): r for r in read_rows(m)}
    assert set(rows) == {("reference", 1.0)} | {
        (k, f) for k in ("low_count", "gaussian", "unet", "ours") for f in FRACTIONS
    }
    ref = rows[("reference", 1.0)]
    # The reference is the blurred truth: its blockage is seen at full contrast (CRC near 1 at this
    # blur) and it is scored against nothing but the truth.
    assert ref["psnr_ref"] == "" and float(ref["crc"]) > 0.5 and int(ref["n_defects"]) == 1
    assert float(ref["cold_spot"]) == 0.0
    low, filt = rows[("low_count", 0.1)], rows[("gaussian", 0.1)]
    assert float(filt["psnr_ref"]) > float(low["psnr_ref"])  # tuned on val, it helps on test too
    assert int(low["n_slices"]) == PLANES
    defects = read_rows(tmp_path / "d.csv")
    assert {d["type"] for d in defects} == {"blockage"}
    assert "N = 6 test slices" in (tmp_path / "t.md").read_text()
    bad = load_npz(outs[0])
    bad["index"] = bad["index"][::-1].copy()
    save_npz(tmp_path / "bad.npz", **bad)
    argv[argv.index(outs[0])] = str(tmp_path / "bad.npz")
    assert main(argv) == 2


def test_config_refuses_a_depth_the_image_size_cannot_hold():
    from positrongan.errors import ConfigError

    with pytest.raises(ConfigError, match="enhancement.unet_depth"):
        validate({"dataset": {"image_size": 32}, "enhancement": {"unet_depth": 5}})
    validate({"dataset": {"image_size": 32}, "enhancement": {"unet_depth": 4}})
