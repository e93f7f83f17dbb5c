"""Flower client mods: small wrappers around the ClientApp, composable like Flower's own."""

from __future__ import annotations

import logging

from flwr.app import Context, Error, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable

import numpy as np
from flwr.app import MetricRecord

from ..shared.metric_dp import CountMechanism, privatize

from ..shared.protocol import ARRAYS_KEY, METRICS_KEY, check_reply, suppress_small_cells

log = logging.getLogger("fedaegis")

PROTOCOL_VIOLATION = 7301  # error code sent instead of a reply that would leak


def protocol_guard(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Send a reply only if it holds nothing but aggregates (see :mod:`fedaegis.shared.protocol`).

    A violating reply is replaced by an error that names the violations, so a bug in
    site code can never put per-sample values on the wire.
    """
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    is_train = msg.metadata.message_type == MessageType.TRAIN
    expected = None
    if is_train and ARRAYS_KEY in msg.content:
        expected = {k: tuple(a.shape) for k, a in msg.content[ARRAYS_KEY].items()}
    problems = check_reply(reply.content, is_train=is_train, expected_arrays=expected)
    if not problems:
        return reply
    log.error("reply withheld, it breaks the privacy protocol: %s", "; ".join(problems))
    return Message(
        Error(code=PROTOCOL_VIOLATION, reason="privacy protocol: " + "; ".join(problems)),
        reply_to=msg,
    )


def cell_suppression(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Withhold every count computed on fewer than ``min-cell-size`` samples (run config).

    Small cells (a site with 4 test images, an attack run on 3) identify patients
    as surely as per-sample values do; they are zeroed and marked suppressed.
    """
    reply = call_next(msg, context)
    if reply.has_error() or METRICS_KEY not in reply.content:
        return reply
    k = int(msg.content["config"].get("min-cell-size", 0)) if "config" in msg.content else 0  # type: ignore[arg-type]
    keep = ("num-examples",) if msg.metadata.message_type == MessageType.TRAIN else ()
    metrics = suppress_small_cells(dict(reply.content[METRICS_KEY]), k, keep=keep)  # type: ignore[arg-type]
    reply.content[METRICS_KEY] = MetricRecord(metrics)
    return reply


DP_STATE = "fedaegis.metric-dp"


def metric_dp(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Add calibrated noise to the reply's counts and charge the site's epsilon budget.

    Configured by the run config (``metric-dp``, ``metric-epsilon``, ``metric-delta``,
    ``metric-epsilon-budget``); the budget spent so far lives in the node's
    Context state, so it accumulates over the rounds of a run. Noise comes from the
    OS entropy pool: it must not be predictable from anything the server knows.
    """
    reply = call_next(msg, context)
    if reply.has_error() or METRICS_KEY not in reply.content or "config" not in msg.content:
        return reply
    cfg = msg.content["config"]
    kind = str(cfg.get("metric-dp", "none"))
    if kind == "none":
        return reply
    mech = CountMechanism(kind, float(cfg["metric-epsilon"]), float(cfg.get("metric-delta", 1e-5)))  # type: ignore[arg-type]
    state = context.state.get(DP_STATE, MetricRecord({"epsilon-spent": 0.0}))
    keep = ("num-examples",) if msg.metadata.message_type == MessageType.TRAIN else ()
    released, spent = privatize(
        dict(reply.content[METRICS_KEY]),  # type: ignore[arg-type]
        mech,
        spent=float(state["epsilon-spent"]),  # type: ignore[arg-type]
        budget=float(cfg["metric-epsilon-budget"]),  # type: ignore[arg-type]
        rng=np.random.default_rng(),
        keep=keep,
    )
    context.state[DP_STATE] = MetricRecord({"epsilon-spent": spent})
    released["dp.epsilon-sum"] = spent
    reply.content[METRICS_KEY] = MetricRecord(released)
    return reply

