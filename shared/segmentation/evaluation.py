"""Clean and adversarial evaluation of a segmenter at a site, as aggregate sums and counts.

Metric names (all pass :func:`fedaegis.shared.reply.protocol.is_aggregate_name`)::

    num-examples                                  volumes (patients) evaluated
    seg.volumes-count | seg.samples-count | seg.voxels-count
    seg.<group>.n-count                           volumes the group was computed on (the
                                                  group size cell suppression and DP use)
    seg.clean.<score>                             no attack
    seg.attack.<attack>.<norm>.eps=<e>.<score>    one attack at one budget
    seg.attack.<attack>.<norm>.eps=<e>.<norm-field> | <target-field>
    seg.robust.<norm>.eps=<e>.<dice>              worst case per volume over clean + attacks
    seg.robust.<norm>.eps=<e>.worst-<attack>-count  volumes where that candidate was worst

    <score>  = dice-sum/-count (per-volume mean over foreground classes),
               dice-classC-sum/-count (C = 1 anterior, 2 posterior),
               hd95-classC-sum/-count (finite values, in voxels: 1 mm after pad_crop),
               hd95-classC-undefined-count (class present but not predicted)
    <norm-field>   = linf-sum/-count, l2-sum/-count (per-volume perturbation norms)
    <target-field> = target-iou-sum/-count, clean-target-iou-sum/-count (targeted attacks)

``<e>`` is ``format_eps(eps)`` (4 significant digits, e.g. 4/255 -> ``0.01569``); for L2
attacks eps is the per-voxel RMS budget (radius ``eps * sqrt(voxels per sample)``).
Every ``X-sum`` has an ``X-count``; the server sums both over sites and divides once
(:func:`segmentation_summary`), which is exactly the mean over all the federation's volumes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

from torch import nn

from .attacks.common import NORMS
from .attacks.ensemble import predict, run_attack, worst_case
from .attacks.registry import ATTACKS, TARGETED
from .attacks.targets import make_target
from ..results.eps import eps_name
from .data import SegmentationSet
from .metrics import iou_fields, norm_fields, score_fields, target_iou, volume_scores

DEFAULT_ATTACKS = ("pgd", "dag", "multiscale", "asma")
DEFAULT_TARGET = "shift:3"
TARGET_SOURCES = ("prediction", "label")

_EPS = r"[0-9]+(?:\.[0-9]+)?(?:e[+\-]?[0-9]+)?"
_NAME = re.compile(
    rf"^seg\.(?:(?P<scope>clean)|attack\.(?P<attack>[a-z0-9_]+)\.(?P<norm>linf|l2)\.eps=(?P<eps>{_EPS})"
    rf"|robust\.(?P<rnorm>linf|l2)\.eps=(?P<reps>{_EPS}))\.(?P<field>[a-z0-9\-]+)$"
)


def format_eps(eps: float) -> str:
    """An epsilon in a metric name: the one format of every family (:func:`fedaegis.shared.results.eps_name`)."""
    return eps_name(eps)


def parse_attack_spec(spec: str, default_norm: str = "linf") -> tuple[str, str]:
    """``"pgd"`` -> ("pgd", default_norm); ``"pgd:l2"`` -> ("pgd", "l2")."""
    name, _, norm = spec.strip().lower().partition(":")
    norm = norm or default_norm
    if name not in ATTACKS:
        raise ValueError(f"seg-attacks: unknown attack {name!r}; choose from {sorted(ATTACKS)}")
    if norm not in NORMS:
        raise ValueError(f"seg-attacks: unknown norm {norm!r} in {spec!r}; choose from {NORMS}")
    return name, norm


def evaluate_segmentation(
    model: nn.Module,
    data: SegmentationSet,
    attacks: Sequence[str] = DEFAULT_ATTACKS,
    eps: float | Sequence[float] = 4 / 255,
    *,
    norm: str = "linf",
    steps: int = 10,
    step_size: float | None = None,
    target: str = DEFAULT_TARGET,
    target_source: str = "prediction",
    seed: int = 0,
    batch_size: int = 64,
    hd95: bool = True,
    max_volumes: int | None = None,
) -> dict[str, float | int]:
    """Clean, per-attack and worst-case (robust) segmentation quality at every budget.

    ``attacks`` are names from :data:`ATTACKS`, optionally with a norm (``"pgd:l2"``;
    default ``norm``). Targeted attacks (ASMA) aim at ``target`` (see
    :func:`~fedaegis.shared.segmentation.attacks.targets.make_target`) applied to the
    model's clean prediction (``target_source='prediction'``: the attacker only has to move
    or erase the structure, everything else already matches) or to the ground truth
    (``'label'``: reaching it also means fixing the model's own errors).
    ``max_volumes`` evaluates only the first volumes (cost control).
    Returns only aggregate counts and sums (see the module docstring for the names).
    """
    if max_volumes is not None:
        data = data.select_volumes(range(min(max_volumes, data.num_volumes)))
    specs = [parse_attack_spec(a, norm) for a in attacks]
    if len(set(specs)) != len(specs):
        raise ValueError(f"seg-attacks: an attack is listed twice in {list(attacks)}")
    eps_list = [float(eps)] if isinstance(eps, (int, float)) else [float(e) for e in eps]
    if any(not (math.isfinite(e) and e > 0) for e in eps_list):
        raise ValueError(f"seg-eps: budgets must be finite and > 0, got {eps_list}")
    if target_source not in TARGET_SOURCES:
        raise ValueError(f"seg-target-source: must be one of {TARGET_SOURCES}, got {target_source!r}")
    x, y, vi, c = data.images, data.masks, data.volume_index, data.num_classes
    out: dict[str, float | int] = {
        "num-examples": data.num_volumes,
        "seg.volumes-count": data.num_volumes,
        "seg.samples-count": len(data),
        "seg.voxels-count": int(y.numel()),
    }
    clean_pred = predict(model, x, batch_size)
    clean = volume_scores(clean_pred, y, vi, c, hd95=hd95)
    out.update(_prefixed("seg.clean", score_fields(clean), data.num_volumes))
    base = clean_pred if target_source == "prediction" else y
    tgt = make_target(base, target) if any(n in TARGETED for n, _ in specs) else None
    clean_tiou = None if tgt is None else target_iou(clean_pred, tgt, vi)
    for e in eps_list:
        by_norm: dict[str, list] = {}
        for i, (name, anorm) in enumerate(specs):
            o = run_attack(model, x, y, vi, name, eps=e, norm=anorm, steps=steps, step_size=step_size,
                           seed=seed + 1000 * i, target_mask=tgt, num_classes=c,
                           batch_size=batch_size, hd95=hd95)
            fields = {**score_fields(o.scores), **norm_fields(o.linf, o.l2)}
            if o.target_iou is not None and clean_tiou is not None:
                fields.update(iou_fields(o.target_iou, clean_tiou))
            out.update(_prefixed(f"seg.attack.{name}.{anorm}.eps={format_eps(e)}", fields, data.num_volumes))
            by_norm.setdefault(anorm, []).append(o)
        for anorm, outcomes in by_norm.items():
            dice, worst = worst_case(clean, outcomes)
            fields = score_fields(clean._replace(dice=dice, hd95=None))
            for j, label in enumerate(["clean", *[o.name for o in outcomes]]):
                fields[f"worst-{label}-count"] = int((worst == j).sum())
            out.update(_prefixed(f"seg.robust.{anorm}.eps={format_eps(e)}", fields, data.num_volumes))
    return out


def _prefixed(prefix: str, fields: Mapping[str, float | int], n: int) -> dict[str, float | int]:
    """``fields`` under ``prefix``, with the group's size as ``prefix.n-count``."""
    return {f"{prefix}.n-count": n, **{f"{prefix}.{k}": v for k, v in fields.items()}}


def parse_metric_name(name: str) -> dict[str, str | float] | None:
    """Split a ``seg.`` metric name into scope, attack, norm, eps and field (None if not one)."""
    m = _NAME.match(name)
    if not m:
        return None
    if m["scope"]:
        return {"scope": "clean", "field": m["field"]}
    if m["attack"]:
        return {"scope": "attack", "attack": m["attack"], "norm": m["norm"], "eps": float(m["eps"]),
                "field": m["field"]}
    return {"scope": "robust", "norm": m["rnorm"], "eps": float(m["reps"]), "field": m["field"]}


def segmentation_summary(totals: Mapping[str, float | int]) -> dict[str, float]:
    """Means from summed metrics: ``X = X-sum / X-count``, plus Dice drops against clean.

    For the server after summing the sites' replies, e.g.
    ``seg.attack.pgd.linf.eps=0.01569.dice`` and ``...dice-drop`` (clean minus attacked).
    """
    out: dict[str, float] = {}
    for name, value in totals.items():
        if name.endswith("-sum"):
            count = totals.get(name[: -len("-sum")] + "-count", 0)
            if count:
                out[name[: -len("-sum")]] = float(value) / float(count)
    clean = {k[len("seg.clean."):]: v for k, v in out.items() if k.startswith("seg.clean.")}
    for name, value in list(out.items()):
        parts = parse_metric_name(name + "-sum")
        if parts and parts["scope"] != "clean":
            field = str(parts["field"])[: -len("-sum")]
            if field.startswith("dice") and field in clean:
                out[f"{name}-drop"] = clean[field] - value
    return out
