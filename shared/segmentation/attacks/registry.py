"""Attacks by name, as a run configuration names them."""

from __future__ import annotations

from .asma import asma_attack
from .common import SegAttack
from .dag import dag_attack
from .multiscale import multiscale_attack
from .pgd import pgd_attack
from .rog import apgd_ce_attack, apgd_dlr_attack, rog_attack, square_attack

ATTACKS: dict[str, SegAttack] = {
    "pgd": pgd_attack, "dag": dag_attack, "multiscale": multiscale_attack, "asma": asma_attack,
    "apgd-ce": apgd_ce_attack, "apgd-dlr": apgd_dlr_attack, "square": square_attack,
    "rog": rog_attack,
}
#: ROG's segmentation AutoAttack (Daza et al.); ``rog`` runs them as one attack, worst case per sample.
ROG = ("apgd-ce", "apgd-dlr", "square")
#: Attacks that only make sense with a target mask (evaluation passes one to these only).
TARGETED = frozenset({"asma"})


def get_attack(name: str) -> SegAttack:
    if name not in ATTACKS:
        raise ValueError(f"seg-attacks: unknown attack {name!r}; choose from {sorted(ATTACKS)}")
    return ATTACKS[name]
