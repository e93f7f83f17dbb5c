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

The declarations live with their family (:mod:`fedaegis.shared.results`, one module a
family); the same declarations drive the client's guard, ``fedaegis audit``, the server's
decoding and the DP sensitivities (:mod:`fedaegis.shared.reply.metric_dp`). A reply may hold only keys the request asked for, at most
``max_keys(cfg)`` of them; anything else is withheld.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from ..run.config import RunConfig
from ..results import FAMILIES as RESULT_FAMILIES
from ..results import Key, KeySet, declared
from ..results.basics import FILES_PER_PATIENT

RESOLUTION = 1e-3  # every released sum is rounded to this grid: a float's low bits carry nothing
SECAGG_PREFIX = "secagg."  # a masked value (secure aggregation): its name, unmasked, must be declared

# the key sets of every metric family (fedaegis.shared.results), in registry order
FAMILIES: tuple[KeySet, ...] = declared(RESULT_FAMILIES)

_COMPILED = {f.name: [(re.compile(k.pattern + "$"), k) for k in f.keys] for f in FAMILIES}


def scalar_problem(name: str, value: object) -> str | None:
    """Why ``value`` cannot leave as metric ``name`` whatever the request: not a finite scalar."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"metric {name!r} is {type(value).__name__}, not a scalar"
    if not math.isfinite(value):
        return f"metric {name!r} is not finite"
    return None


def basic_problems(metrics: Mapping[str, object]) -> list[str]:
    """What every reply's metrics need, asked or not: a ``num-examples`` and finite scalars only."""
    problems = [] if "num-examples" in metrics or SECAGG_PREFIX + "num-examples" in metrics else [
        "metrics lack 'num-examples'"]
    return problems + [p for name, value in metrics.items() if (p := scalar_problem(name, value))]


def requested(cfg: RunConfig, is_train: bool) -> list[KeySet]:
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
    limit = sum(f.max_keys(cfg) for f in requested(cfg, is_train))
    problems = basic_problems(metrics)
    if len(metrics) > limit:
        problems.insert(0, f"reply has {len(metrics)} metrics, more than the {limit} this request asks for")
    for name, value in metrics.items():
        if scalar_problem(name, value):
            continue  # said by basic_problems
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
