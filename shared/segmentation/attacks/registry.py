"""Attacks by name, as a run configuration names them."""

from __future__ import annotations

from .asma import asma_attack
from .common import SegAttack
from .dag import dag_attack
from .multiscale import multiscale_attack
from .pgd import pgd_attack

ATTACKS: dict[str, SegAttack] = {
    "pgd": pgd_attack, "dag": dag_attack, "multiscale": multiscale_attack, "asma": asma_attack,
}
#: Attacks that only make sense with a target mask (evaluation passes one to these only).
TARGETED = frozenset({"asma"})


def get_attack(name: str) -> SegAttack:
    if name not in ATTACKS:
        raise ValueError(f"seg-attacks: unknown attack {name!r}; choose from {sorted(ATTACKS)}")
    return ATTACKS[name]
