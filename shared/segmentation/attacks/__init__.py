"""Adversarial attacks on segmenters, 2D and 3D, behind one call signature.

``attack(model, x, y_mask, eps, norm="linf", steps=10, step_size=None, seed=0,
target_mask=None) -> x_adv``: batched, ``x`` in [0, 1], ``x_adv`` inside the ``norm`` ball
of radius ``eps`` around ``x`` and inside [0, 1] (projected exactly).
"""

from .asma import asma_attack
from .common import SegAttack, attack_mode, project
from .dag import dag_attack
from .ensemble import AttackOutcome, RobustResult, l2_radius, predict, robust_dice, run_attack, worst_case
from .multiscale import multiscale_attack
from .pgd import pgd_attack
from .registry import ATTACKS, ROG, TARGETED, get_attack
from .rog import apgd_ce_attack, apgd_dlr_attack, rog_attack, square_attack
from .targets import TARGET_KINDS, make_target, remove_structure, shift_structure

__all__ = [
    "ATTACKS",
    "ROG",
    "TARGETED",
    "TARGET_KINDS",
    "AttackOutcome",
    "RobustResult",
    "SegAttack",
    "apgd_ce_attack",
    "apgd_dlr_attack",
    "asma_attack",
    "attack_mode",
    "dag_attack",
    "get_attack",
    "l2_radius",
    "make_target",
    "multiscale_attack",
    "pgd_attack",
    "predict",
    "project",
    "remove_structure",
    "robust_dice",
    "rog_attack",
    "run_attack",
    "shift_structure",
    "square_attack",
    "worst_case",
]
