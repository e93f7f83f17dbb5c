"""Adversarial attacks on segmenters, 2D and 3D, behind the attack library's contract.

Each attack is a :class:`~.base.SegmentationAttack` (an
:class:`~fedaegis.shared.attacks.base.Attack` for dense label maps) in a file of its own:
``build_attack(name, eps=..., norm="linf", steps=10, step_size=None, seed=0)`` makes one and
``attack.perturb(model, x, y_mask, target_mask=None) -> x_adv`` runs it on a batch: ``x`` in
[0, 1], ``x_adv`` inside the ``norm`` ball of radius ``eps`` around ``x`` and inside [0, 1]
(projected exactly).
"""

from .apgd import APGDCE, APGDDLR
from .asma import ASMA
from .base import SegmentationAttack
from .common import attack_mode, project
from .dag import DAG
from .fab import FAB
from .ensemble import AttackOutcome, RobustResult, l2_radius, predict, robust_dice, run_attack, worst_case
from .multiscale import MultiScale
from .pgd import PGD
from .registry import ATTACKS, ROG, TARGETED, build_attack, get_attack
from .rog import ROGAutoAttack
from .square import Square
from .targets import TARGET_KINDS, make_target, remove_structure, shift_structure

__all__ = [
    "APGDCE",
    "APGDDLR",
    "ASMA",
    "ATTACKS",
    "DAG",
    "FAB",
    "PGD",
    "ROG",
    "TARGETED",
    "TARGET_KINDS",
    "AttackOutcome",
    "MultiScale",
    "ROGAutoAttack",
    "RobustResult",
    "SegmentationAttack",
    "Square",
    "attack_mode",
    "build_attack",
    "get_attack",
    "l2_radius",
    "make_target",
    "predict",
    "project",
    "remove_structure",
    "robust_dice",
    "run_attack",
    "shift_structure",
    "worst_case",
]
