"""What a site may send: the privacy protocol every client reply is checked against.

A reply may hold (a) the model's arrays, only in answer to a training request and
only with the global model's own keys and shapes, and (b) a MetricRecord of scalar
counts and sums over the site's data. Lists, per-sample values, config records and
unknown names never leave a site. The client enforces this with
:func:`fedaegis.client.mods.protocol_guard`; tests and audits use :func:`check_reply`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from typing import TYPE_CHECKING

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from .secagg import record_problems as secagg_record_problems
if TYPE_CHECKING:
    from ..run.config import RunConfig

# The only error codes a fedaegis site sends; the reason is fixed text or a site-policy field.
PROTOCOL_VIOLATION = 7301  # a reply broke the reply schema and was withheld
POLICY_REFUSAL = 7310  # the request exceeds the site's policy: reason "site policy: <field>"
SITE_ERROR = 7311  # anything else went wrong at the site (details in the site's own log)
SITE_CODES = {PROTOCOL_VIOLATION: "protocol", POLICY_REFUSAL: "refusal", SITE_ERROR: "site-error"}
REFUSAL_PREFIX = "site policy: "
LOG_PREFIX = "[fedaegis] "  # how fedaegis' lines start in Flower's log stream (simulate picks them out)
EVENT_LEVEL = "EVENT"  # the level field of a progress event line: ``[fedaegis] EVENT {json}``
PROGRESS_ENV = "FEDAEGIS_PROGRESS"  # set where progress events are wanted (``fedaegis simulate``'s live display)

ARRAYS_KEY = "arrays"
METRICS_KEY = "metrics"
SECAGG_KEY = "secagg"  # public keys, signatures and encrypted shares of secure aggregation (shared/reply/secagg.py)

# The last dotted segment of every metric name must be an aggregate over a site's data.
_AGGREGATE_NAMES = {"num-examples", "correct", "skipped", "queries", "successes", "failures"}
_AGGREGATE_SUFFIXES = ("-sum", "-count", "-correct")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.=+\-]*$")


def is_aggregate_name(name: str) -> bool:
    last = name.rsplit(".", 1)[-1]
    return bool(_NAME_RE.match(name)) and (
        last in _AGGREGATE_NAMES or last.endswith(_AGGREGATE_SUFFIXES)
    )


def _declared_sizes() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The group-size keys the metric families declare: full names, and leaves of any group.

    Read from every :class:`~fedaegis.shared.results.Key`'s ``size`` (a full name such as
    ``inversion.images-count``, or ``.n-count``: "this key's own group's ``n-count``"), so a
    family that declares a new group size is suppressed by it without a list kept here.
    """
    from ..results import FAMILIES

    names, leaves = ["num-examples"], []
    for family in FAMILIES:
        for key_set in family.key_sets:
            for key in key_set.keys:
                into, size = (leaves, key.size[1:]) if key.size.startswith(".") else (names, key.size)
                if size not in into:
                    into.append(size)
    return tuple(names), tuple(leaves)


SIZE_NAMES, SIZE_LEAVES = _declared_sizes()  # e.g. ("num-examples", ..., "inversion.images-count"), ("n-count", ...)
SUPPRESSED = "suppressed-count"


def _group(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def _key(group: str, leaf: str) -> str:
    return f"{group}.{leaf}" if group else leaf


def group_sizes(metrics: Mapping[str, float]) -> dict[str, float]:
    """Each metric group (name up to its last dot) and the number of samples it was computed on.

    A group's size is the size key its family declares for it (``<group>.n-count``,
    ``inversion.images-count``, ...: :data:`SIZE_NAMES`, :data:`SIZE_LEAVES`); groups without
    one (e.g. a site's top-level train/evaluate metrics) use the top-level ``num-examples``.
    """
    top = float(metrics.get("num-examples", 0))
    sizes: dict[str, float] = {}
    for name in metrics:
        group = _group(name)
        if group not in sizes:
            candidates = [_key(group, leaf) for leaf in SIZE_LEAVES] + [n for n in SIZE_NAMES if _group(n) == group]
            own = [metrics[n] for n in candidates if n in metrics]
            sizes[group] = float(own[0]) if own else top
    return sizes


def suppress_small_cells(
    metrics: Mapping[str, int | float], k: int, *, keep: tuple[str, ...] = ()
) -> dict[str, int | float]:
    """Zero every group computed on fewer than ``k`` samples and mark it ``suppressed-count = 1``.

    Keys never disappear (so every site sends the same names, as secure
    aggregation needs); a suppressed group reports zeros and adds nothing to the
    federation's totals. ``keep`` names values that stay as they are (the FedAvg
    weight of a training reply).
    """
    if k <= 0:
        return dict(metrics)
    out = dict(metrics)
    for group, size in group_sizes(metrics).items():
        small = size < k
        for name in metrics:
            if small and _group(name) == group and name not in keep:
                out[name] = 0 if isinstance(metrics[name], int) else 0.0
        out[_key(group, SUPPRESSED)] = int(small)
    return out


def check_metrics(metrics: Mapping[str, object]) -> list[str]:
    """Violations in a metric mapping: non-scalars, non-finite values, non-aggregate names."""
    from .schema import basic_problems

    problems = basic_problems(metrics)
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue  # said by basic_problems
        if not is_aggregate_name(name):
            problems.append(f"metric {name!r} is not a count or sum")
        elif isinstance(value, int) and value < 0:
            problems.append(f"count {name!r} is negative")
    return problems


ROUND_KEY = "server-round"


def request_config(content: RecordDict) -> tuple[RunConfig, int]:
    """A request's run config (what the coordinator asks for) and its round number."""
    from ..run.config import RunConfig

    config = dict(content["config"])  # type: ignore[arg-type]
    server_round = int(config.pop(ROUND_KEY, 0))  # type: ignore[arg-type]
    # secagg-* entries steer secure aggregation, not the run
    return RunConfig.from_flower({k: v for k, v in config.items() if not k.startswith("secagg-")}), server_round


def check_reply(
    content: RecordDict,
    *,
    is_train: bool,
    expected_arrays: Mapping[str, tuple[int, ...]] | None = None,
    request: RunConfig | None = None,
) -> list[str]:
    """All protocol violations of one reply's content (an empty list means it may be sent).

    With the ``request`` (its run config), the metrics must also fit the reply schema of
    what it asked for (:func:`fedaegis.shared.reply.schema.check`).
    """
    problems: list[str] = []
    for key, record in content.items():
        if key == METRICS_KEY and isinstance(record, MetricRecord):
            problems += check_metrics(record)
            if request is not None:
                from .schema import check

                problems += [p for p in check(record, request, is_train) if p not in problems]
        elif key == ARRAYS_KEY and isinstance(record, ArrayRecord) and is_train:
            if expected_arrays is not None:
                got = {k: tuple(a.shape) for k, a in record.items()}
                if got != dict(expected_arrays):
                    problems.append("arrays differ from the global model's keys or shapes")
        elif key == SECAGG_KEY and isinstance(record, ConfigRecord) and not is_train:
            problems += secagg_record_problems(record)
        else:
            problems.append(f"record {key!r} ({type(record).__name__}) may not leave the site")
    if METRICS_KEY not in content and SECAGG_KEY not in content:
        problems.append("reply has no metrics record")
    return problems
