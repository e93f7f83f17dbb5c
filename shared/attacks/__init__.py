"""Evasion attacks for 2D and 3D medical image classifiers, behind one interface.

``build_attack(name, **params)`` makes an attack from a run configuration and
``evaluate_attacks`` runs a suite over a site's data, returning only summable
counts per (attack, epsilon) so that sites can report robustness without
revealing per-image outcomes.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..data.types import batch_for
from .apgd import APGD, APGDT
from .base import Attack, AttackResult, ThreatModel, attack_mode, check_batch
from .bim import BIM
from .cw import CW
from .deepfool import DeepFool
from .ensemble import AutoAttack, AutoAttackFast
from .fab import FAB
from .fgsm import FGSM
from .fmn import FMN, robust_accuracy_curve
from .hopskipjump import HopSkipJump
from .mifgsm import MIFGSM
from .onepixel import OnePixel
from .pgd import PGD
from .rays import RayS
from .square import Square
from .tifgsm import TIFGSM
from .universal import UniversalPerturbation
from .watermark import Watermark

ATTACKS: dict[str, type[Attack]] = {
    cls.name: cls
    for cls in (FGSM, BIM, PGD, MIFGSM, TIFGSM, CW, DeepFool, APGD, APGDT, FAB, Square,
                OnePixel, UniversalPerturbation, Watermark, FMN, AutoAttack, AutoAttackFast)
} | {
    cls.name: cls for cls in (HopSkipJump, RayS)  # label-only, with a query-budget grid
}

DEFAULT_EPSILONS: tuple[float, ...] = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
THREAT_FIELDS = ("norm", "eps", "targeted", "target")
METRIC_FIELDS = AttackResult.COUNT_FIELDS

__all__ = [
    "ATTACKS",
    "DEFAULT_EPSILONS",
    "Attack",
    "AttackResult",
    "ThreatModel",
    "build_attack",
    "evaluate_attacks",
    "flatten_metrics",
    "robust_accuracy_curve",
    "targeted_labels",
    *[cls.__name__ for cls in ATTACKS.values()],
]


def attack_params(name: str) -> dict[str, Any]:
    """The keyword parameters (and defaults) an attack accepts besides the threat model."""
    cls = _lookup(name)
    sig = inspect.signature(cls.__init__)
    return {p.name: p.default for p in sig.parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _lookup(name: str) -> type[Attack]:
    if not isinstance(name, str) or name not in ATTACKS:
        raise ValueError(f"name: unknown attack {name!r}; choose one of {sorted(ATTACKS)}")
    return ATTACKS[name]


def build_attack(name: str, **params: Any) -> Attack:
    """Make attack ``name``; threat-model fields (norm, eps, targeted, target) go in ``params`` too.

    Raises ``ValueError`` naming the offending field for unknown names or parameters
    and for invalid values.
    """
    cls = _lookup(name)
    allowed = attack_params(name)
    threat_kw = {k: params.pop(k) for k in THREAT_FIELDS if k in params}
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"{unknown[0]}: not a parameter of {name!r}; "
                         f"accepted: {sorted([*THREAT_FIELDS, *allowed])}")
    threat = None
    if threat_kw:
        merged = {f: getattr(cls.default_threat, f) for f in THREAT_FIELDS}
        merged.update(threat_kw)
        try:
            merged["eps"] = float(merged["eps"])
        except (TypeError, ValueError):
            raise ValueError(f"eps: must be a number, got {merged['eps']!r}") from None
        threat = ThreatModel(**merged)
    return cls(threat, **params)


def _source(data: Any) -> tuple[Any, Any] | list[tuple[torch.Tensor, torch.Tensor]]:
    """``data`` in a form that can be walked more than once: an (images, labels) pair, or a list of batches.

    Images kept as stored (:class:`~fedaegis.shared.data.types.LazyImages`) stay so: each batch is
    made when it is drawn, so the set is never held whole as float32.
    """
    if hasattr(data, "images") and hasattr(data, "labels"):
        return data.images, data.labels
    if isinstance(data, (tuple, list)) and len(data) == 2 and hasattr(data[0], "shape") and not isinstance(
            data[0], (tuple, list)):
        return data[0], data[1]
    out = []
    for batch in data:
        if isinstance(batch, Mapping):
            xb = batch.get("image", batch.get("x"))
            yb = batch.get("label", batch.get("y"))
            if xb is None or yb is None:
                raise ValueError("data: dict batches need 'image'/'label' (or 'x'/'y') keys")
        else:
            xb, yb = batch[0], batch[1]
        out.append((xb, yb))
    return out


def _batches(data: Any, batch_size: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """Accept (x, y) tensors or stored images, an object with ``images``/``labels``, or an iterable of batches."""
    source = _source(data)
    if isinstance(source, tuple):
        x, y = source
        for i in range(0, len(y), batch_size):
            yield x[i:i + batch_size], y[i:i + batch_size]
        return
    yield from source


def _spec(entry: str | Mapping[str, Any]) -> tuple[str, str, dict[str, Any], list[float] | None]:
    """Normalise a suite entry into (label, name, params, eps override)."""
    if isinstance(entry, str):
        return entry, entry, {}, None
    if not isinstance(entry, Mapping) or "name" not in entry:
        raise ValueError(f"suite: each entry must be a name or a dict with 'name', got {entry!r}")
    params = dict(entry)
    name = params.pop("name")
    label = str(params.pop("label", name))
    eps = params.pop("eps", None)
    if eps is not None:
        eps = [float(e) for e in (eps if isinstance(eps, (list, tuple)) else [eps])]
    return label, name, params, eps


def _plans(suite: Sequence[str | Mapping[str, Any]], epsilons: Sequence[float]
           ) -> list[tuple[str, str, dict[float, Attack]]]:
    """The suite as (label, name, {eps: attack}), validated: at least one attack and one epsilon,
    distinct labels."""
    if not suite:
        raise ValueError("suite: need at least one attack")
    eps_default = [float(e) for e in epsilons]
    if not eps_default:
        raise ValueError("epsilons: need at least one value")
    plans = []
    for entry in suite:
        label, name, params, eps = _spec(entry)
        eps_list = eps if eps is not None else eps_default
        attacks = {e: build_attack(name, eps=e, **params) for e in eps_list}
        plans.append((label, name, attacks))
    labels = [p[0] for p in plans]
    if len(set(labels)) != len(labels):
        raise ValueError(f"label: suite entries need distinct labels, got {labels}")
    return plans


def targeted_labels(suite: Sequence[str | Mapping[str, Any]], epsilons: Sequence[float] = DEFAULT_EPSILONS
                    ) -> frozenset[str]:
    """The labels of the suite's targeted attacks (``threat.targeted``).

    Only their successes carry information of their own: an untargeted attack's are
    ``clean_correct - robust_correct``, so a site does not send them
    (:func:`fedaegis.shared.results.robustness.encode`).
    """
    return frozenset(label for label, _, attacks in _plans(suite, epsilons)
                     if any(a.threat.targeted for a in attacks.values()))


def evaluate_attacks(
    model: nn.Module,
    data: Any,
    suite: Sequence[str | Mapping[str, Any]],
    epsilons: Sequence[float] = DEFAULT_EPSILONS,
    *,
    batch_size: int | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict[tuple[str, float], dict[str, int | float]]:
    """Run every attack of ``suite`` at every epsilon over ``data``; return summed counts only.

    ``data`` is ``(x, y)``, an ``ImageSet``-like object or an iterable of batches
    (tuples or dicts); images kept as stored are drawn one batch at a time, and batches
    move to the model's device as they are used. A suite entry is a name or ``{"name": ..., "label": ...,
    "eps": [...], **params}``; an entry's ``eps`` overrides ``epsilons``. The clean
    forward pass is made once per batch and shared; FMN yields all epsilons from
    one run; universal perturbations are fitted once on all data per epsilon, in
    increasing order, each starting from the previous one (so their fooling rate on
    ``data`` never falls as epsilon grows).
    Keys are ``(label, eps)``; values hold n, clean_correct, robust_correct,
    successes, linf_sum, l2_sum, queries (and attack-specific counts).
    ``progress(done, total, label)`` is called after each attack's pass over a batch
    (units: samples times attack runs, an FMN curve counting once). ``batch_size``: 128 images,
    fewer for large inputs (:func:`~fedaegis.shared.data.types.batch_for`).
    """
    plans = _plans(suite, epsilons)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    source = _source(data)
    if batch_size is None:
        batch_size = batch_for(source[0].shape[1:], 128) if isinstance(source, tuple) else 128

    def batches() -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """Each batch on the model's device, made as it is drawn (one batch held at a time)."""
        for xb, yb in _batches(source, batch_size):
            yield check_batch(xb.to(device), yb.to(device))

    for _, name, attacks in plans:
        if name == "universal":  # smallest budget first, each fit starting from the last one (on all batches)
            fitting, prev = list(batches()), None
            for e in sorted(attacks):
                prev = attacks[e].fit(model, fitting, init=prev)
            del fitting

    totals: dict[tuple[str, float], AttackResult] = {}
    runs = sum(1 if name == "fmn" else len(attacks) for _, name, attacks in plans)
    n = len(source[1]) if isinstance(source, tuple) else sum(int(xb.shape[0]) for xb, _ in source)
    total, done = runs * n, 0
    for xb, yb in batches():
        with attack_mode(model), torch.inference_mode():
            clean = model(xb)
        clean = clean.clone()
        for label, name, attacks in plans:
            if name == "fmn":
                first = next(iter(attacks.values()))
                runs_of_batch = [first.curve(model, xb, yb, list(attacks), clean_logits=clean)]
            else:  # one epsilon at a time, so that progress moves with each
                runs_of_batch = ({e: atk.attack(model, xb, yb, clean_logits=clean)} for e, atk in attacks.items())
            for results in runs_of_batch:
                for e, res in results.items():
                    res.x_adv = None
                    key = (label, e)
                    totals[key] = totals[key].merge(res) if key in totals else res
                done += int(xb.shape[0])
                if progress is not None:
                    progress(done, total, label)
    for label, name, attacks in plans:
        if name == "universal":  # count the fitting queries once
            for e, atk in attacks.items():
                if (label, e) in totals:
                    totals[(label, e)].queries += atk.fit_queries
    return {k: v.counts() for k, v in totals.items()}


def flatten_metrics(metrics: Mapping[tuple[str, float], Mapping[str, int | float]]) -> dict[str, int | float]:
    """Flat ``"label/eps=0.0314/field"`` keys, e.g. for Flower's scalar metric dicts."""
    from ..results.eps import eps_name

    return {f"{label}/eps={eps_name(eps)}/{field}": value
            for (label, eps), fields in metrics.items() for field, value in fields.items()}
