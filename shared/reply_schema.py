"""The reply schema: every value a site may send, declared once per metric family.

Each family (plain evaluation, training, attacks, the hardening table, detection,
backdoor, inversion audit, segmentation, DP-SGD accounting) declares its keys as
patterns whose parameters must come from the request (an attack the request named,
one of its epsilons, one of its defence members), each key's type and its group:

- ``size``: a group's sample count (public: the size of the site's fixed set);
- ``count``: an integer in ``[0, group size]`` whose value one patient moves by at most
  ``sensitivity``;
- ``sum``: a sum of per-sample values in ``[-bound, bound]`` (``bound`` None: no known
  bound, so it is withheld under DP), on a grid of ``RESOLUTION``;
- ``meta``: bookkeeping that is not data (suppression flags, epsilon spent).

The same declarations drive the client's guard, ``fedaegis audit``, the server's
decoding and the DP sensitivities (:mod:`fedaegis.shared.metric_dp`), so a new family is
added here and nowhere else. A reply may hold only keys the request asked for, at most
``max_keys(cfg)`` of them; anything else is withheld.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .config import RunConfig

RESOLUTION = 1e-3  # every released sum is rounded to this grid: a float's low bits carry nothing
SECAGG_PREFIX = "secagg."  # a masked value (secure aggregation): its name, unmasked, must be declared
# One patient may own several files (a DICOM series, repeat scans): ``skipped`` counts files.
FILES_PER_PATIENT = 4
_EPS = r"(?P<eps>[0-9.e+\-]+)"
_NAME = r"[a-z0-9_\-+]+"


@dataclass(frozen=True)
class Key:
    """One declared key: a regex over the full name, its type, and its group's size key."""

    pattern: str
    kind: str  # size | count | sum | meta
    sensitivity: float = 1.0  # count: how far one patient moves it
    bound: float | None = None  # sum: per-sample absolute bound (None: unbounded)
    size: str = "num-examples"  # the group's size key; ".x" means "<this key's group>.x"

    def size_key(self, name: str) -> str:
        return name.rsplit(".", 1)[0] + self.size if self.size.startswith(".") else self.size


@dataclass(frozen=True)
class Family:
    name: str
    keys: tuple[Key, ...]
    applies: Callable[[RunConfig, bool], bool]  # (request, is_train) -> does the request ask for it
    max_keys: Callable[[RunConfig], int]
    params: Callable[[RunConfig], dict[str, set[str]]] = lambda cfg: {}  # allowed values of named groups


def _eps_set(cfg: RunConfig, fmt: str = "{:.6g}") -> set[str]:
    return {fmt.format(e) for e in cfg.epsilon_values}


def _classification(cfg: RunConfig) -> bool:
    return cfg.task == "classification"


_SEG_ATTACKS = r"(?:clean|attack\.[a-z0-9_]+\.(?:linf|l2)\.eps=(?P<eps>[0-9.e+\-]+)|robust\.(?:linf|l2)\.eps=(?P<reps>[0-9.e+\-]+))"

FAMILIES: tuple[Family, ...] = (
    Family("bookkeeping", (
        Key(r"num-examples", "size"),
        Key(r"skipped", "count", sensitivity=FILES_PER_PATIENT),
        Key(r"(?:[a-z0-9_.=+\-]+\.)?suppressed-count", "meta"),
        Key(r"dp-withheld-count", "meta"),
        Key(r"dp\.epsilon-sum", "meta"),
        Key(r"dp\.noise-std-sum", "meta"),
    ), lambda cfg, train: True, lambda cfg: 6),
    Family("evaluation", (
        Key(r"correct", "count"),
        Key(r"loss-sum", "sum"),  # cross-entropy: no bound
    ), lambda cfg, train: not train and _classification(cfg), lambda cfg: 2),
    Family("training", (
        Key(r"train-correct", "count"),
        Key(r"train-loss-sum", "sum"),
        # SSAT's unlabelled pool (its size) and how many of it were pseudo-labelled in the last epoch
        Key(r"train-unlabelled-count", "size", size="train-unlabelled-count"),
        Key(r"train-pseudo-labelled-count", "count", size="train-unlabelled-count"),
    ), lambda cfg, train: train and _classification(cfg), lambda cfg: 8),
    Family("dp-sgd", (Key(r"dpsgd\.epsilon-sum", "meta"),),
           lambda cfg, train: train and cfg.dp_epsilon > 0, lambda cfg: 1),
    Family("attacks", (
        Key(rf"attack\.(?P<attack>{_NAME})\.eps={_EPS}\.n-count", "size", size=".n-count"),
        Key(rf"attack\.(?P<attack>{_NAME})\.eps={_EPS}\.(?:clean-correct|robust-correct|successes)", "count",
            size=".n-count"),
        Key(rf"attack\.(?P<attack>{_NAME})\.eps={_EPS}\.(?:linf-sum|l2-sum)", "sum", size=".n-count"),
        Key(rf"attack\.(?P<attack>{_NAME})\.eps={_EPS}\.queries", "sum", size=".n-count"),
        # an attack's own counts, e.g. AutoAttack's robust-after-<stage>-count: samples of the set
        Key(rf"attack\.(?P<attack>{_NAME})\.eps={_EPS}\.[a-z0-9\-]+-count", "count", size=".n-count"),
    ), lambda cfg, train: not train and bool(cfg.attack_names),
        lambda cfg: 16 * len(cfg.attack_names) * len(cfg.epsilon_values),
        lambda cfg: {"attack": set(cfg.attack_names), "eps": _eps_set(cfg)}),
    Family("backdoor", (
        Key(r"backdoor\.num-examples", "size", size="backdoor.num-examples"),
        Key(r"backdoor\.hit-count", "count", size="backdoor.num-examples"),
    ), lambda cfg, train: not train and cfg.threat == "backdoor", lambda cfg: 2),
    Family("inversion", (
        Key(r"inversion\.images-count", "size", size="inversion.images-count"),
        Key(r"inversion\.psnr-sum", "sum", size="inversion.images-count"),
        Key(r"inversion\.ssim-sum", "sum", bound=1.0, size="inversion.images-count"),
    ), lambda cfg, train: train and bool(cfg.inversion_audit), lambda cfg: 3),
    Family("members", (
        Key(rf"member\.(?P<member>{_NAME})\.train-correct", "count"),
        Key(rf"member\.(?P<member>{_NAME})\.train-loss-sum", "sum"),
    ), lambda cfg, train: train and bool(cfg.defence_models), lambda cfg: 2 * len(cfg.defence_model_names),
        lambda cfg: {"member": set(cfg.defence_model_names)}),
    Family("hardening-table", (
        Key(rf"defence\.(?:hardening|transfer|adaptive)\.(?P<system>{_NAME})(?:\.eps={_EPS})?\.n-count", "size",
            size=".n-count"),
        Key(rf"defence\.(?:hardening|transfer|adaptive)\.(?P<system>{_NAME})(?:\.eps={_EPS})?\.(?:clean|robust)-correct",
            "count", size=".n-count"),
        Key(rf"defence\.transfer\.routed(?:\.eps={_EPS})?\.routed-count", "count"),
    ), lambda cfg, train: not train and bool(cfg.defence_models),
        lambda cfg: 4 * (len(cfg.defence_model_names) + 2) * (len(cfg.epsilon_values) + 1) * 3,
        lambda cfg: {"system": set(cfg.defence_model_names) | {"routed", "ensemble"}, "eps": _eps_set(cfg)}),
    Family("detection", (
        # each patient gives two scored inputs (clean and attacked): sensitivity 2
        Key(rf"detector\.(?P<detector>{_NAME})\.eps={_EPS}\.num-examples", "size", size=".num-examples"),
        Key(rf"detector\.(?P<detector>{_NAME})\.eps={_EPS}\.(?:clean|adv)-bin[0-9]+-count", "count", sensitivity=2,
            size=".num-examples"),
    ), lambda cfg, train: not train and bool(cfg.detector),
        lambda cfg: len(cfg.epsilon_values) * (1 + 2 * 9999),
        lambda cfg: {"detector": {cfg.detector}, "eps": _eps_set(cfg)}),
    Family("segmentation", (
        Key(r"seg\.(?:volumes|samples|voxels)-count", "size"),  # the site's test volumes, slices, voxels
        Key(r"train-loss-sum", "sum"),
        Key(r"seg\.train\.samples-count", "size", size="seg.train.samples-count"),
        Key(r"seg\.train\.(?:voxels|steps|adversarial)-count", "meta"),
        Key(rf"seg\.{_SEG_ATTACKS}\.n-count", "size", size=".n-count"),
        Key(rf"seg\.{_SEG_ATTACKS}\.[a-z0-9\-]+-count", "count", size=".n-count"),
        # Dice and IoU per volume lie in [0, 1]
        Key(rf"seg\.{_SEG_ATTACKS}\.(?:dice|dice-class[0-9]+|target-iou|clean-target-iou)-sum", "sum", bound=1.0,
            size=".n-count"),
        Key(rf"seg\.{_SEG_ATTACKS}\.[a-z0-9\-]+-sum", "sum", size=".n-count"),
    ), lambda cfg, train: cfg.task == "segmentation",
        lambda cfg: 64 * (2 + len(cfg.epsilon_values) * (1 + len(cfg.seg_attacks.split(",")))) * cfg.num_classes,
        lambda cfg: {"eps": _eps_set(cfg, "{:.4g}"), "reps": _eps_set(cfg, "{:.4g}")}),
)

_COMPILED = {f.name: [(re.compile(k.pattern + "$"), k) for k in f.keys] for f in FAMILIES}


def requested(cfg: RunConfig, is_train: bool) -> list[Family]:
    return [f for f in FAMILIES if f.applies(cfg, is_train)]


def declaration(name: str, cfg: RunConfig, is_train: bool) -> Key | None:
    """The declared key ``name`` answers to in this request, or None (then it may not leave)."""
    base = name[len(SECAGG_PREFIX):] if name.startswith(SECAGG_PREFIX) else name
    for family in requested(cfg, is_train):
        allowed = family.params(cfg)
        for rx, key in _COMPILED[family.name]:
            m = rx.fullmatch(base)
            if m and all(v is None or group not in allowed or _param_ok(group, v, allowed[group])
                         for group, v in m.groupdict().items()):
                return key
    return None


def _param_ok(group: str, value: str, allowed: set[str]) -> bool:
    if group in ("eps", "reps"):
        return value in allowed or any(_close(value, a) for a in allowed)
    return value in allowed


def _close(a: str, b: str) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-4)
    except ValueError:
        return False


def check(metrics: Mapping[str, object], cfg: RunConfig, is_train: bool) -> list[str]:
    """Every way ``metrics`` breaks the schema of this request (empty: it may leave).

    Checks declared names only (no per-sample keys, no data in names), at most the
    families' bound on their number, integer counts within ``[0, group size]``, finite
    sums on the release grid within their bound: so labels packed into names or into a
    float's low bits are refused.
    """
    problems: list[str] = []
    limit = sum(f.max_keys(cfg) for f in requested(cfg, is_train))
    if len(metrics) > limit:
        problems.append(f"reply has {len(metrics)} metrics, more than the {limit} this request asks for")
    if "num-examples" not in metrics and SECAGG_PREFIX + "num-examples" not in metrics:
        problems.append("metrics lack 'num-examples'")
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"metric {name!r} is {type(value).__name__}, not a scalar")
            continue
        if not math.isfinite(value):
            problems.append(f"metric {name!r} is not finite")
            continue
        key = declaration(name, cfg, is_train)
        if key is None:
            problems.append(f"metric {name!r} is not a key this request asked for")
            continue
        if name.startswith(SECAGG_PREFIX) or key.kind == "meta":
            continue  # masked (uniform) or bookkeeping
        if key.kind in ("size", "count"):
            if float(value) != int(value) or value < 0:
                problems.append(f"count {name!r} is not a non-negative integer")
            elif key.kind == "count" and value > float(metrics.get(key.size_key(name), math.inf)):  # type: ignore[arg-type]
                problems.append(f"count {name!r} exceeds its group size {key.size_key(name)!r}")
        elif not on_grid(float(value)):
            problems.append(f"sum {name!r} is not on the release grid (low bits carry data)")
        elif key.bound is not None:
            size = float(metrics.get(key.size_key(name), math.inf))  # type: ignore[arg-type]
            if abs(value) > key.bound * size + RESOLUTION:
                problems.append(f"sum {name!r} exceeds its bound")
    return problems


def on_grid(value: float) -> bool:
    steps = value / RESOLUTION
    return abs(steps - round(steps)) <= 1e-6 * max(1.0, abs(steps)) ** 0.5 + 1e-6


def to_grid(value: float) -> float:
    return round(value / RESOLUTION) * RESOLUTION


def release_form(metrics: Mapping[str, int | float], cfg: RunConfig, is_train: bool) -> dict[str, int | float]:
    """The site's reply as released: counts as ints, sums rounded to the grid (the guard judges the rest)."""
    out: dict[str, int | float] = {}
    for name, value in metrics.items():
        key = declaration(name, cfg, is_train)
        if key is None or isinstance(value, bool) or not isinstance(value, int | float):
            out[name] = value
        elif key.kind in ("size", "count") and math.isfinite(value):
            out[name] = int(round(value))
        elif key.kind == "sum" and math.isfinite(value):
            out[name] = to_grid(float(value))
        else:
            out[name] = value
    return out


def group_size(name: str, metrics: Mapping[str, float], cfg: RunConfig, is_train: bool) -> float:
    """The number of samples behind ``name`` (its declared group's size key)."""
    key = declaration(name, cfg, is_train)
    size_name = key.size_key(name) if key else "num-examples"
    return float(metrics.get(size_name, metrics.get("num-examples", 0)))
