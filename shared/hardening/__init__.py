"""Adversarial training ("hardening") methods behind one interface.

``build_hardening(name, **params)`` makes a method from a run configuration; each method
is a loss part (an ``Objective``) of the one training loop, so
``fedaegis.shared.training.train_classifier(model, data, method, ...)`` trains with it
and returns only summed counts, like plain local training.
"""

from __future__ import annotations

import inspect
from typing import Any

from .base import Hardening, pgd_linf
from .evaluate import evaluate_hardening, hardening_accuracies
from .fast_fgsm import FastFGSM
from .mart import MART
from .pgd_at import PGDAT
from .ssat import SSAT
from .trades import TRADES

HARDENINGS: dict[str, type[Hardening]] = {
    cls.name: cls for cls in (PGDAT, TRADES, FastFGSM, MART, SSAT)
}

__all__ = [
    "HARDENINGS",
    "MART",
    "SSAT",
    "TRADES",
    "FastFGSM",
    "Hardening",
    "PGDAT",
    "build_hardening",
    "evaluate_hardening",
    "hardening_accuracies",
    "hardening_params",
    "pgd_linf",
]


def hardening_params(name: str) -> dict[str, Any]:
    """The keyword parameters (and defaults) method ``name`` accepts."""
    if name not in HARDENINGS:
        raise ValueError(f"name: unknown hardening method {name!r}; choose one of {sorted(HARDENINGS)}")
    sig = inspect.signature(HARDENINGS[name].__init__)
    return {p.name: p.default for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def build_hardening(name: str, **params: Any) -> Hardening:
    """Make method ``name``; unknown parameters and bad values raise ``ValueError`` naming the field."""
    allowed = hardening_params(name)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"{unknown[0]}: not a parameter of {name!r}; accepted: {sorted(allowed)}")
    return HARDENINGS[name](**params)
