"""The defect detector (positrongan.detect): metrics with known answers, a learnable synthetic
set, the enhance-contract reader and the two CLI stages."""

import csv

import numpy as np
import pytest
import torch

from positrongan.cli import main
from positrongan.detect import detector_features, detector_masks, detector_scores, load_detector, train_detector
from positrongan.detect.evaluate import load_enhanced, matching_factor, run_detection_study
from positrongan.detect.infer import scores_from_probabilities
from positrongan.detect.scoring import dice, positive_rate, roc_auc, threshold_at_fp
from positrongan.errors import ArtifactError
from positrongan.io import save_npz

BUBBLE = 4  # geometry.phantom.DEFECT_LABELS["bubble"]


def discs(n, size=32, seed=0):
    """Bright noisy discs (the tube), every other one with a dark disc (a 'bubble') inside.

    Returns (images (n, S, S) float32 in [0, 1], labels (n, S, S) uint8).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    imgs, labs = [], []
    for i in range(n):
        c = size / 2 + rng.uniform(-2, 2, 2)
        tube = (yy - c[0]) ** 2 + (xx - c[1]) ** 2 < (size * 0.35) ** 2
        img = 0.8 * tube + 0.05 * rng.standard_normal((size, size))
        lab = np.zeros((size, size), np.uint8)
        if i % 2:
            b = c + rng.uniform(-4, 4, 2)
            hole = (yy - b[0]) ** 2 + (xx - b[1]) ** 2 < 3.0**2
            img[hole] = 0.15 + 0.05 * rng.standard_normal(hole.sum())
            lab[hole] = BUBBLE
        imgs.append(np.clip(img, 0, 1))
        labs.append(lab)
    return np.array(imgs, np.float32), np.array(labs)


# -- metrics with known answers


def test_auc_known_answers():
    assert roc_auc([2, 3, 4], [0, 1]) == 1.0
    assert roc_auc([0, 1], [2, 3, 4]) == 0.0
    assert roc_auc([1, 1], [1, 1, 1]) == 0.5  # all ties
    # One of the 2 x 2 pairs is misordered: AUC 3/4.
    assert roc_auc([1, 3], [2, 0]) == 0.75
    rng = np.random.default_rng(0)
    assert roc_auc(rng.random(4000), rng.random(4000)) == pytest.approx(0.5, abs=0.02)
    assert np.isnan(roc_auc([], [1.0]))


def test_threshold_gives_the_false_positive_rate():
    neg = np.random.default_rng(1).permutation(np.arange(100) / 100)
    thr = threshold_at_fp(neg, 0.1)
    assert positive_rate(neg, thr) == 0.1
    assert positive_rate(neg, threshold_at_fp(neg, 0.0)) == 0.0
    # Sensitivity at that threshold: positives above 0.895 are found.
    assert positive_rate(np.array([0.5, 0.95, 0.99, 0.2]), thr) == 0.5


def test_dice_known_answers():
    a = np.zeros((8, 8), bool)
    a[2:6, 2:6] = True
    assert dice(a, a) == 1.0
    assert dice(a, ~a) == 0.0
    b = np.zeros_like(a)
    b[2:6, 2:4] = True  # half of a: 2 * 8 / (16 + 8)
    assert dice(b, a) == pytest.approx(2 / 3)
    assert np.isnan(dice(np.zeros_like(a), np.zeros_like(a)))


def test_topk_score():
    prob = np.zeros((1, 3, 4, 4), np.float32)
    prob[0, 1].flat[:3] = [0.9, 0.6, 0.3]
    prob[0, 2, 0, 0] = 1.0
    s = scores_from_probabilities(prob, topk=2)
    assert s.shape == (1, 2)
    assert s[0].tolist() == pytest.approx([0.75, 0.5])


def test_matching_factor():
    f = np.array([0.01, 0.1, 1.0])
    # Target 0.8 halfway (in value) between f = 0.1 and f = 1: f* = 10**-0.5, factor sqrt(10).
    factor, text = matching_factor(f, np.array([0.5, 0.7, 0.9]), 0.8)
    assert factor == pytest.approx(np.sqrt(10))
    assert matching_factor(f, np.array([0.5, 0.6, 0.7]), 0.8) == (None, "not reached")
    factor, text = matching_factor(f, np.array([0.85, 0.9, 0.95]), 0.8)
    assert factor == pytest.approx(100) and text.startswith(">=")


# -- training


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    x, y = discs(48, seed=0)
    xv, yv = discs(16, seed=1)
    model, meta = train_detector(x, y, xv, yv, epochs=30, batch_size=8, width=4, learning_rate=5e-3, topk=4, seed=3)
    return model, meta


def test_detector_learns_a_separable_set(trained):
    model, meta = trained
    xt, yt = discs(24, seed=2)
    scores = detector_scores(model, xt)
    assert scores.shape == (24, 4)
    has = (yt == BUBBLE).any((1, 2))
    assert roc_auc(scores[has, BUBBLE - 1], scores[~has, BUBBLE - 1]) > 0.95
    masks = detector_masks(model, xt)
    overlap = np.nanmean([dice(masks[i] == BUBBLE, yt[i] == BUBBLE) for i in np.flatnonzero(has)])
    assert overlap > 0.5
    feats = detector_features(model, xt)
    assert feats.shape == (24, model.feature_dim) and np.isfinite(feats).all()
    assert 1 <= meta["chosen_epoch"] <= 30 and len(meta["history"]) == 30


def test_same_seed_same_weights():
    x, y = discs(8, seed=0)
    a, meta = train_detector(x, y, epochs=2, batch_size=4, width=2, seed=5)
    assert meta["chosen_epoch"] == 2  # no validation set: the last epoch
    b, _ = train_detector(x, y, epochs=2, batch_size=4, width=2, seed=5)
    c, _ = train_detector(x, y, epochs=2, batch_size=4, width=2, seed=6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


# -- the enhance contract and the CLI


def _dataset(tmp_path):
    x, y = discs(48, seed=10)
    split = np.array(["train"] * 24 + ["val"] * 12 + ["test"] * 12)
    scan = np.array(["scan_000"] * 24 + ["scan_001"] * 12 + ["scan_002"] * 12)
    rng = np.random.default_rng(0)
    # Short-scan twins: noisier copies (the dataset's scale), at two fractions.
    low = np.stack([x + s * rng.standard_normal(x.shape).astype(np.float32) for s in (0.1, 0.5)], 1)
    data = dict(
        images=x,
        defect_labels=y,
        split=split,
        scan=scan,
        low_count=np.clip(low, 0, None).astype(np.float32),
        low_count_fractions=np.array([0.1, 0.01]),
    )
    path = tmp_path / "positron.npz"
    save_npz(path, **data)
    return path, data


def _enhanced(path, data, index=None):
    index = np.flatnonzero(data["split"] == "test") if index is None else index
    save_npz(
        path,
        enhanced=data["images"][index][:, None].repeat(2, 1),
        index=index.astype(np.int64),
        fractions=np.array([0.1, 0.01]),
    )


def test_enhance_contract_checks(tmp_path, trained):
    model, _ = trained
    _, data = _dataset(tmp_path)
    good = tmp_path / "enhance" / "perfect" / "seed0.npz"
    _enhanced(good, data)
    enh, index, fr = load_enhanced(good, data)
    assert enh.shape == (12, 2, 32, 32) and fr.tolist() == [0.1, 0.01]
    bad = tmp_path / "enhance" / "leaky" / "seed0.npz"
    _enhanced(bad, data, index=np.arange(12))  # training rows
    with pytest.raises(ArtifactError, match=r"leaky/seed0\.npz.*not test slices"):
        load_enhanced(bad, data)
    rows = run_detection_study(model, data, np.full(4, 0.5), [good])
    perfect = [r for r in rows if r["condition"] == "perfect" and r["type"] == "bubble"]
    ref = next(r for r in rows if r["condition"] == "reference" and r["type"] == "bubble")
    # An "enhancement" that returns the reference image scores exactly as the reference does.
    assert [r["seed"] for r in perfect] == [0, 0]
    assert all(r["auc"] == ref["auc"] and r["sensitivity"] == ref["sensitivity"] for r in perfect)


def test_cli_train_and_evaluate(tmp_path):
    dataset, data = _dataset(tmp_path)
    enh = tmp_path / "enhance" / "perfect" / "seed1.npz"
    _enhanced(enh, data)
    det, meta = tmp_path / "detect" / "detector.pt", tmp_path / "detect" / "detector.json"
    sets = ["--set", "detection.epochs=30", "--set", "detection.width=4", "--set", "detection.batch_size=8"]
    sets += ["--set", "detection.learning_rate=0.005"]
    assert main(["train-detector", "--dataset", str(dataset), "--out", str(det), "--meta", str(meta), *sets]) == 0
    model = load_detector(det)
    assert model.thresholds.shape == (4,) and meta.exists()
    out = tmp_path / "eval"
    argv = ["evaluate-detection", "--dataset", str(dataset), "--detector", str(det), "--enhanced", str(enh)]
    argv += [
        "--csv",
        str(out / "detection.csv"),
        "--png",
        str(out / "detection.png"),
        "--table",
        str(out / "detection.md"),
    ]
    assert main(argv) == 0
    rows = list(csv.DictReader(open(out / "detection.csv")))
    ref = next(r for r in rows if r["condition"] == "reference" and r["type"] == "bubble")
    assert int(ref["n_pos"]) == 6 and int(ref["n_neg"]) == 6
    assert float(ref["auc"]) > 0.95
    assert {r["condition"] for r in rows} == {"reference", "raw", "perfect"}
    table = (out / "detection.md").read_text()
    assert "bubble (N pos 6" in table and (out / "detection.png").stat().st_size > 0


def test_cli_names_a_missing_enhanced_file(tmp_path, capsys):
    dataset, _ = _dataset(tmp_path)
    det = tmp_path / "detector.pt"
    assert (
        main(
            [
                "train-detector",
                "--dataset",
                str(dataset),
                "--out",
                str(det),
                "--set",
                "detection.epochs=1",
                "--set",
                "detection.width=2",
            ]
        )
        == 0
    )
    missing = tmp_path / "enhance" / "x" / "seed0.npz"
    argv = [
        "evaluate-detection",
        "--dataset",
        str(dataset),
        "--detector",
        str(det),
        "--enhanced",
        str(missing),
        "--csv",
        str(tmp_path / "d.csv"),
        "--png",
        str(tmp_path / "d.png"),
        "--table",
        str(tmp_path / "d.md"),
    ]
    assert main(argv) == 2
    assert "seed0.npz: file not found" in capsys.readouterr().err
