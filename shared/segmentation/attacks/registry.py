"""Segmentation attacks by name, as a run configuration names them."""

from __future__ import annotations

import inspect
from typing import Any

from ...attacks.base import ThreatModel
from .apgd import APGDCE, APGDDLR
from .asma import ASMA
from .base import SegmentationAttack
from .dag import DAG
from .fab import FAB
from .multiscale import MultiScale
from .pgd import PGD
from .rog import ROGAutoAttack
from .square import Square

ATTACKS: dict[str, type[SegmentationAttack]] = {
    cls.name: cls for cls in (PGD, DAG, MultiScale, ASMA, APGDCE, APGDDLR, FAB, Square, ROGAutoAttack)
}
#: ROG's segmentation AutoAttack (Daza et al.); ``rog`` runs them as one attack, worst case per sample.
ROG = ("apgd-ce", "apgd-dlr", "fab", "square")
#: Attacks that only make sense with a target mask (evaluation passes one to these only).
TARGETED = frozenset(name for name, cls in ATTACKS.items() if cls.needs_target)


def get_attack(name: str) -> type[SegmentationAttack]:
    if name not in ATTACKS:
        raise ValueError(f"seg-attacks: unknown attack {name!r}; choose from {sorted(ATTACKS)}")
    return ATTACKS[name]


def build_attack(name: str, *, eps: float, norm: str = "linf", **params: Any) -> SegmentationAttack:
    """Make segmentation attack ``name`` with budget ``eps`` in ``norm`` and its own ``params``
    (``steps``, ``step_size``, ``seed``, and e.g. ``shift`` for DAG); bad values raise
    ``ValueError`` naming the field."""
    try:
        eps = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"eps: must be a number, got {eps!r}") from None
    cls = get_attack(name)
    allowed = sorted(p.name for p in inspect.signature(cls.__init__).parameters.values()
                     if p.kind is inspect.Parameter.KEYWORD_ONLY)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"{unknown[0]}: not a parameter of {name!r}; accepted: {['eps', 'norm', *allowed]}")
    return cls(ThreatModel(norm=norm, eps=eps), **params)
