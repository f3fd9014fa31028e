"""Detection metrics on per-slice scores and masks (pure numpy)."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties counting 1/2.

    The Mann-Whitney U statistic divided by n_pos * n_neg (midranks handle the ties).

    Params:
        pos, neg: scores of the positive and the negative slices.
    Returns:
        The AUC, NaN when either set is empty.
    """
    pos, neg = np.asarray(pos, np.float64).ravel(), np.asarray(neg, np.float64).ravel()
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    ranks = rankdata(np.concatenate([pos, neg]))
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def threshold_at_fp(neg: np.ndarray, fp_rate: float) -> float:
    """The lowest threshold t of the form 'score > t' that flags at most ``fp_rate`` of ``neg``.

    Params:
        neg: scores of negative slices (at least one).
        fp_rate: allowed false-positive fraction in [0, 1).
    Returns:
        The threshold (an element of ``neg``; a slice is called positive when its score exceeds it).
    """
    neg = np.sort(np.asarray(neg, np.float64).ravel())
    if len(neg) == 0:
        raise ValueError("threshold_at_fp needs at least one negative score")
    # Flag at most floor(fp * n) negatives: t is the (n - floor(fp * n))-th smallest score.
    allowed = int(np.floor(fp_rate * len(neg) + 1e-9))
    return float(neg[len(neg) - allowed - 1])


def positive_rate(scores: np.ndarray, threshold: float) -> float:
    """Fraction of ``scores`` above ``threshold`` (sensitivity on positives, FP rate on negatives); NaN if empty."""
    scores = np.asarray(scores, np.float64).ravel()
    return float((scores > threshold).mean()) if len(scores) else float("nan")


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient 2|A n B| / (|A| + |B|) of two boolean masks; NaN when both are empty."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    total = pred.sum() + truth.sum()
    return float(2.0 * np.logical_and(pred, truth).sum() / total) if total else float("nan")
