"""Downstream defect detection (issue 17 item 3) and the domain features (issue 16 item 5).

A small U-Net segments each positron slice into background and the phantom's defect types
(``geometry.phantom.DEFECT_LABELS``); a per-slice, per-type presence score is the mean of the
``topk`` largest probabilities of that type's map. It is trained on reference-count images of
the training scans only, so it can judge images of any other origin: low-count twins, enhanced
twins, generated images. Its pooled bottleneck activations are the domain features of
``metrics.domain``.

Modules: ``unet`` (the network), ``train`` (training, saving, loading), ``infer`` (scores,
masks, features), ``scoring`` (AUC, thresholds, Dice), ``evaluate`` (the held-out study,
CSV, figure, headline table).
"""

from .infer import detector_features, detector_masks, detector_probabilities, detector_scores
from .train import TYPES, fit_thresholds, load_detector, save_detector, train_detector

__all__ = [
    "TYPES",
    "detector_features",
    "detector_masks",
    "detector_probabilities",
    "detector_scores",
    "fit_thresholds",
    "load_detector",
    "save_detector",
    "train_detector",
]
