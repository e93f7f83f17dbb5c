"""Adversarial-input detectors on a model's penultimate features, and their privacy-safe ROC.

Detectors (``MahalanobisDetector``, ``KDBUDetector``) are fitted on one site's
own data and score inputs (higher: more likely adversarial). Sites report only
binned score histograms (:mod:`.roc`); the server sums them and computes the AUC.
"""

from .base import batched, feature_fn, threshold_at_fpr
from .kd_bu import KDBUDetector, fit_logistic
from .mahalanobis import MahalanobisDetector
from .roc import (
    DEFAULT_BINS,
    ScoreBins,
    auc_table,
    binned_auc,
    decode_histograms,
    detection_metrics,
    detection_scores,
    encode_histograms,
)

DETECTORS = {"mahalanobis": MahalanobisDetector, "kd-bu": KDBUDetector}

__all__ = [
    "DEFAULT_BINS",
    "DETECTORS",
    "KDBUDetector",
    "MahalanobisDetector",
    "ScoreBins",
    "auc_table",
    "batched",
    "binned_auc",
    "decode_histograms",
    "detection_metrics",
    "detection_scores",
    "encode_histograms",
    "feature_fn",
    "fit_logistic",
    "threshold_at_fpr",
]
