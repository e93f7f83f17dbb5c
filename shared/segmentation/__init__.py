"""Federated segmentation robustness: hippocampus MRI data, MONAI segmenters, attacks,
training (optionally adversarial) and evaluation reduced to summable counts and sums.
"""

from .attacks import ATTACKS, TARGETED, SegmentationAttack, build_attack, make_target, robust_dice
from .data import (
    DEFAULT_SIZE_3D,
    NUM_CLASSES,
    SMALL_VOLUMES,
    SegmentationSet,
    SiteData,
    load_hippocampus,
    load_site_segmentation,
    split_patients,
    split_sites,
)
from .evaluation import (
    DEFAULT_ATTACKS,
    evaluate_segmentation,
    format_eps,
    parse_metric_name,
    segmentation_summary,
)
from .metrics import VolumeScores, perturbation_norms, target_iou, volume_scores
from .models import SEG_MODELS, build_segmenter
from .training import AdversarialTraining, segmentation_loss

__all__ = [
    "ATTACKS",
    "DEFAULT_ATTACKS",
    "DEFAULT_SIZE_3D",
    "NUM_CLASSES",
    "SEG_MODELS",
    "SMALL_VOLUMES",
    "TARGETED",
    "AdversarialTraining",
    "SegmentationAttack",
    "SegmentationSet",
    "SiteData",
    "VolumeScores",
    "build_attack",
    "build_segmenter",
    "evaluate_segmentation",
    "format_eps",
    "load_hippocampus",
    "load_site_segmentation",
    "make_target",
    "parse_metric_name",
    "perturbation_norms",
    "robust_dice",
    "segmentation_summary",
    "split_patients",
    "split_sites",
    "target_iou",
    "volume_scores",
    "segmentation_loss",
]
