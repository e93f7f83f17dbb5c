"""The one home of local training: a loop with composable parts.

* loss parts (:mod:`.objectives`): plain or class-weighted cross-entropy, every
  adversarial-training method (:class:`fedaegis.shared.hardening.Hardening` is an
  :class:`Objective`), segmentation's DiceCE with optional PGD hardening;
* the step (:mod:`.steps`): an optimiser from the one factory (:mod:`.optim`), or
  Opacus' DP-SGD, with optional mixed precision (:mod:`.device`);
* data and update transforms (:mod:`.transforms`): a simulated threat's poisoning and
  boosting, pruning.

A site round (``client/classification_round.py``, ``client/segmentation_site.py``)
composes them from the run config; :func:`fit` runs them on the site's device.
"""

from __future__ import annotations

from .device import AMP_MODES, autocast, check_amp, data_to, node_device, resolve_device, to_cpu
from .evaluate import evaluate_local
from .loop import Fit, fit, train_classifier, train_segmenter
from .objectives import CrossEntropy, Objective, SegmentationObjective, balanced_weights, check_class_weights
from .optim import OPTIMIZERS, make_optimizer
from .steps import DPSGD, OptimizerStep

__all__ = [
    "AMP_MODES",
    "DPSGD",
    "OPTIMIZERS",
    "CrossEntropy",
    "Fit",
    "Objective",
    "OptimizerStep",
    "SegmentationObjective",
    "autocast",
    "balanced_weights",
    "check_amp",
    "check_class_weights",
    "data_to",
    "evaluate_local",
    "fit",
    "make_optimizer",
    "node_device",
    "resolve_device",
    "to_cpu",
    "train_classifier",
    "train_segmenter",
]
