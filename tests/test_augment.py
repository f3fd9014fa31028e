"""The mask-conditioned generator (detect.conditional) and the augmentation study
(detect.augment): shapes, ranges and seeds; a short training lowers the L1; the study gives the
known answer on a set whose planted defect is plain to see; the rules plan when switched on."""

import csv

import numpy as np
import pytest
import torch

from positrongan.cli import main
from positrongan.config import derived_seed, validate
from positrongan.detect.augment import run_augmentation_study, stratified_subset, summarise, synthetic_maps
from positrongan.detect.conditional import (
    MAX_TEXTURE,
    ConditionalGenerator,
    condition_planes,
    generate,
    interior_mask,
    load_conditional,
    texture_ratio,
    train_conditional,
)
from positrongan.io import save_npz
from test_workflow import snakemake

BUBBLE = 4  # geometry.phantom.DEFECT_LABELS["bubble"]


def tubes(n, size=32, seed=0, noise=0.05):
    """Truth maps of a bright disc with a cold disc (a 'bubble') in every other slice, their
    labels, and 'reconstructions': the truth blurred, with noise.

    Returns (images, truth, labels), (n, S, S) each; images and truth in [0, 1].
    """
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    imgs, truths, labs = [], [], []
    for i in range(n):
        c = size / 2 + rng.uniform(-2, 2, 2)
        truth = ((yy - c[0]) ** 2 + (xx - c[1]) ** 2 < (size * 0.35) ** 2).astype(np.float32)
        lab = np.zeros((size, size), np.uint8)
        if i % 2:
            b = c + rng.uniform(-3, 3, 2)
            hole = (yy - b[0]) ** 2 + (xx - b[1]) ** 2 < 3.0**2
            truth[hole] = 0.1
            lab[hole] = BUBBLE
        img = 0.8 * ndimage.gaussian_filter(truth, 1.0) + noise * rng.standard_normal((size, size))
        imgs.append(np.clip(img, 0, 1))
        truths.append(truth)
        labs.append(lab)
    return np.array(imgs, np.float32), np.array(truths, np.float32), np.array(labs)


def test_generator_shape_range_and_seed():
    torch.manual_seed(0)
    net = ConditionalGenerator(32, 4, 2).eval()
    _, truth, labels = tubes(5)
    cond = condition_planes(truth, labels)
    assert cond.shape == (5, 5, 32, 32)
    # One mask per type: the bubble plane holds exactly the labelled pixels.
    assert np.array_equal(cond[:, BUBBLE], (labels == BUBBLE).astype(np.float32))
    a = generate(net, truth, labels, seed=3)
    b = generate(net, truth, labels, seed=3)
    c = generate(net, truth, labels, seed=4)
    assert a.shape == (5, 32, 32) and a.dtype == np.float32
    assert a.min() >= 0 and a.max() <= 1
    assert np.array_equal(a, b)  # same noise seed, same images
    assert not np.array_equal(a, c)  # the noise reaches the output
    # Without the texture (the L1 regression) the output is the mean image: no noise dependence.
    torch.manual_seed(0)
    mean_only = ConditionalGenerator(32, 4, 2, texture=False).eval()
    assert np.array_equal(generate(mean_only, truth, labels, seed=3), generate(mean_only, truth, labels, seed=4))


def test_texture_kernel_starts_as_a_unit_gaussian():
    net = ConditionalGenerator(32, 4, 2, kernel=9)
    net.reset_texture()
    w = net.kernel.weight.detach()[0, 0]
    # Unit L2 norm: white N(0, 1) noise through K keeps unit variance; peak at the centre.
    assert float(w.pow(2).sum()) == pytest.approx(1.0, rel=1e-6)
    assert int(w.argmax()) == 4 * 9 + 4
    z = torch.randn(1, 1, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert float(net.correlated(z).std()) == pytest.approx(1.0, abs=0.05)
        # Whatever K becomes, the correlated noise keeps unit variance: s alone sets the amplitude.
        net.kernel.weight.mul_(7.0)
        assert float(net.correlated(z).std()) == pytest.approx(1.0, abs=0.05)
        net.unet.head.scale.bias.fill_(50.0)
        _, scale = net.mean_and_scale(torch.zeros(1, 5, 32, 32))
    assert float(scale.max()) <= MAX_TEXTURE


def test_training_lowers_l1_and_is_seeded(tmp_path):
    torch.set_num_threads(1)
    imgs, truth, labels = tubes(16, seed=1)
    kw = dict(iterations=60, batch_size=4, channels=8, depth=2, d_channels=8, lambda_l1=10.0, lr=2e-3, log_every=20)
    fit = train_conditional(imgs, truth, labels, seed=7, val=(imgs, truth, labels), **kw)
    l1 = [r["loss_l1"] for r in fit.history]
    assert np.mean(l1[-10:]) < 0.5 * np.mean(l1[:5])
    vals = [r["val_l1"] for r in fit.history if "val_l1" in r]
    assert len(vals) == 3 and vals[-1] < vals[0]
    again = train_conditional(imgs, truth, labels, seed=7, **kw)
    sa, sb = fit.net.state_dict(), again.net.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_texture_ratio_known_answers():
    imgs, truth, labels = tubes(6, noise=0.05)
    smooth, _, _ = tubes(6, noise=0.0)
    noisier, _, _ = tubes(6, noise=0.10)  # the same draws, doubled
    assert interior_mask(truth, labels).any()
    assert texture_ratio(imgs, imgs, truth, labels) == pytest.approx(1.0)
    # A noise-free (mean) image has almost none of the real interior texture; twice the noise, twice the std.
    assert texture_ratio(smooth, imgs, truth, labels) < 0.1
    assert texture_ratio(noisier, imgs, truth, labels) == pytest.approx(2.0, rel=0.03)  # less the smooth part's own small std


def test_stratified_subset_holds_every_type():
    labels = np.zeros((40, 4, 4), np.uint8)
    for t, i in zip((1, 2, 3, 4), (3, 17, 25, 38)):
        labels[i, 0, 0] = t  # each type in one slice only
    for seed in range(5):
        pick = stratified_subset(labels, 5, np.random.default_rng(seed))
        assert len(np.unique(pick)) == 5
        assert set(np.unique(labels[pick])) == {0, 1, 2, 3, 4}
    with pytest.raises(ValueError, match="cannot draw 41"):
        stratified_subset(labels, 41, np.random.default_rng(0))


def test_synthetic_maps_use_only_the_pool_and_keep_labels_with_truth():
    _, truth, labels = tubes(10)
    pool = np.array([1, 3, 5])
    t, lab = synthetic_maps(truth, labels, pool, 7, np.random.default_rng(0))
    assert t.shape == (7, 32, 32) and lab.dtype == np.uint8
    for ti, li in zip(t, lab):
        # Every map is one of the pool's maps in some orientation, labels moved with the truth.
        match = [
            j
            for j in pool
            for k in range(8)
            if np.array_equal(ti, _orient(truth[j], k)) and np.array_equal(li, _orient(labels[j], k))
        ]
        assert match


def _orient(a, k):
    a = np.rot90(a, k % 4)
    return np.flip(a, -1) if k >= 4 else a


def _study_data(n_train=40, n_val=12, n_test=12):
    imgs, truth, labels = tubes(n_train + n_val + n_test, seed=11)
    split = np.array(["train"] * n_train + ["val"] * n_val + ["test"] * n_test)
    scan = np.array(["scan_000"] * n_train + ["scan_001"] * n_val + ["scan_002"] * n_test)
    return dict(images=imgs, truth=truth, defect_labels=labels, split=split, scan=scan)


def _small_detection(**aug):
    cfg = validate(
        {
            "detection": {
                "width": 4,
                "batch_size": 8,
                "learning_rate": 0.005,
                "epochs": 10,
                "conditional": {"iterations": 40, "batch_size": 4, "channels": 8, "depth": 2, "d_channels": 8, "lr": 0.002},
                "augmentation": {"real_counts": [8], "seeds": [0, 1], "steps": 60, "synthetic_factor": 2, **aug},
            }
        }
    )
    return cfg["detection"]


def test_study_finds_a_plain_defect_and_pairs_the_conditions():
    torch.set_num_threads(1)
    data = _study_data()
    dcfg = _small_detection()
    # Seeds as the command derives them: hash() of strings changes with every process.
    rows = run_augmentation_study(data, dcfg, lambda *names: derived_seed({"seed": 0}, "augmentation", *names))
    bubble = [r for r in rows if r["type"] == "bubble"]
    assert len(bubble) == 4  # 2 seeds x 2 conditions
    assert {(r["condition"], r["n_synthetic"]) for r in bubble} == {("real", 0), ("real+synthetic", 16)}
    # The cold disc is plain to see: 8 real slices suffice, with or without generated ones.
    assert all(r["auc"] > 0.95 for r in bubble), [r["auc"] for r in bubble]
    assert all(r["n_pos"] == 6 and r["n_neg"] == 6 for r in bubble)
    # Matched optimiser steps: 8 slices = 1 batch x 60 epochs; 24 slices = 3 batches x 20 epochs.
    assert {r["steps"] for r in bubble} == {60}
    summary = {s["type"]: s for s in summarise(rows)}["bubble"]
    assert summary["seeds"] == 2 and summary["real_mean"] > 0.95
    assert summary["diff_mean"] == pytest.approx(summary["real+synthetic_mean"] - summary["real_mean"])


def test_cli_train_conditional_and_evaluate_augmentation(tmp_path):
    torch.set_num_threads(1)
    data = _study_data()
    dataset = tmp_path / "positron.npz"
    save_npz(dataset, **data)
    sets = []
    for k, v in {
        "conditional.iterations": 20,
        "conditional.channels": 4,
        "conditional.depth": 2,
        "conditional.d_channels": 8,
        "augmentation.real_counts": "[6]",
        "augmentation.seeds": "[0]",
        "augmentation.steps": 10,
        "width": 4,
    }.items():
        sets += ["--set", f"detection.{k}={v}"]
    pt, log, png = tmp_path / "c" / "seed0.pt", tmp_path / "c" / "seed0.json", tmp_path / "c" / "seed0.png"
    argv = ["train-conditional", "--dataset", str(dataset), "--out", str(pt), "--log", str(log), "--png", str(png)]
    assert main([*argv, *sets]) == 0
    net = load_conditional(pt)
    assert net.meta["train_slices"] == 40 and png.stat().st_size > 0
    assert generate(net, data["truth"][:2], data["defect_labels"][:2], seed=0).shape == (2, 32, 32)
    out = tmp_path / "eval"
    argv = ["evaluate-augmentation", "--dataset", str(dataset), "--csv", str(out / "a.csv")]
    argv += ["--table", str(out / "a.md"), "--png", str(out / "a.png")]
    assert main([*argv, *sets]) == 0
    with open(out / "a.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["condition"] for r in rows} == {"real", "real+synthetic"} and len(rows) == 10
    assert "| 6 | 24 | bubble |" in (out / "a.md").read_text()
    # N real as large as the training split leaves no map to generate from: one clear message.
    bad = [*sets, "--set", "detection.augmentation.real_counts=[40]"]
    assert main([*argv, *bad]) != 0


def test_workflow_plans_the_rules_when_enabled(tmp_path):
    on = tmp_path / "on.yaml"
    on.write_text("detection:\n  conditional: {enabled: true}\n  augmentation: {enabled: true}\n")
    res = snakemake("-n", "--cores", "2", "--quiet", "rules", "--configfile", "config/config.yaml", str(on))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "train_conditional" in res.stdout and "evaluate_augmentation" in res.stdout


@pytest.mark.slow
def test_workflow_leaves_the_rules_out_by_default():
    off = snakemake("-n", "--cores", "2", "--quiet", "rules")
    assert off.returncode == 0, off.stderr[-3000:]
    assert "train_conditional" not in off.stdout and "evaluate_augmentation" not in off.stdout


def test_config_rejects_an_even_or_oversized_kernel():
    from positrongan.errors import ConfigError

    with pytest.raises(ConfigError, match=r"detection\.conditional\.kernel' = 4: must be odd"):
        validate({"detection": {"conditional": {"kernel": 4}}})
    with pytest.raises(ConfigError, match=r"detection\.conditional\.kernel' = 65: must be below"):
        validate({"dataset": {"image_size": 32}, "detection": {"conditional": {"kernel": 65}}})
