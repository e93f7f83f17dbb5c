"""Privacy audits and defences a site runs on itself: what would its update reveal, and what helps.

Audits reconstruct the site's own images from what it is about to send and report only
PSNR/SSIM sums and a count (protocol-safe); defences are DP-SGD (Opacus), update
pruning and proximal gradient split learning.
"""

from .defences import dp_sgd_step_gradients, prune_smallest, prune_update
from ..models.lenet import LeNet
from .inversion import (
    Reconstruction,
    batch_gradients,
    gradients_from_update,
    infer_labels,
    inversion_audit,
    reconstruct,
)
from .psgl import SplitModel, Wire, activation_inversion_audit, psgl_evaluate, psgl_train, split_model
from .quality import matched_scores, quality_sums
from .table import PrivacyRow, format_table, privacy_utility_table, table_row

__all__ = [
    "LeNet",
    "PrivacyRow",
    "Reconstruction",
    "SplitModel",
    "Wire",
    "activation_inversion_audit",
    "batch_gradients",
    "dp_sgd_step_gradients",
    "format_table",
    "gradients_from_update",
    "infer_labels",
    "inversion_audit",
    "matched_scores",
    "privacy_utility_table",
    "prune_smallest",
    "prune_update",
    "psgl_evaluate",
    "psgl_train",
    "quality_sums",
    "reconstruct",
    "split_model",
    "table_row",
]
