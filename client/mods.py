"""Flower client mods: small wrappers around the ClientApp, composable like Flower's own.

Outermost first: :func:`site_guard` (the site's policy and its errors),
:func:`protocol_guard` (the reply schema), then secure aggregation, :func:`metric_dp`
(DP and the persistent ledger) and :func:`cell_suppression`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from flwr.app import Context, Error, Message, MessageType, MetricRecord
from flwr.clientapp.typing import ClientAppCallable

from ..shared.reply import schema as reply_schema
from ..shared.run.config import RunConfig
from ..shared.site.ledger import PrivacyLedger
from ..shared.reply.metric_dp import EPSILON_KEY, CountMechanism, privatize, withhold
from ..shared.reply.protocol import (
    ARRAYS_KEY,
    METRICS_KEY,
    POLICY_REFUSAL,
    PROTOCOL_VIOLATION,
    ROUND_KEY,
    SITE_ERROR,
    check_reply,
    suppress_small_cells,
)
from ..shared.reply.protocol import request_config as _request_config
from ..shared.site.policy import PolicyError, Refusal, SitePolicy, check_request, site_policy
from .site_log import relay_simulated_site_log

log = logging.getLogger("fedaegis.site")  # the site's own log: stays at the site

__all__ = ["ROUND_KEY", "LedgerSource", "cell_suppression", "metric_dp", "protocol_guard", "request_config",
           "site_guard"]

# Where a site's releases are charged, from its node config (default: client.site.site_ledger, in the
# policy's state-dir). A mod's settings are keyword arguments bound when the app is built
# (``functools.partial(metric_dp, ledger=...)``, see client/app.py's build_client_app), as Flower's
# own mods take theirs in their constructor; what a mod reads from the message is the request.
LedgerSource = Callable[[Mapping[str, object]], PrivacyLedger]


def _ledger(source: LedgerSource | None, node_config: Mapping[str, object]) -> PrivacyLedger:
    if source is None:
        from .site import site_ledger

        source = site_ledger
    return source(node_config)


def request_config(msg: Message) -> tuple[RunConfig, int]:
    """The request's run config (a request, checked against the policy) and its round."""
    return _request_config(msg.content)


def release_epsilon(cfg: RunConfig, policy: SitePolicy) -> CountMechanism:
    """The DP a release gets: the policy's mechanism, at the request's epsilon or the policy's cap.

    The request can ask for less noise only down to the policy's ``dp.max-epsilon``
    (a request above it is refused), and cannot switch DP off where the policy requires it.
    """
    if cfg.metric_dp == "none" and not policy.dp_required:
        return CountMechanism("none", 0.0)
    epsilon = policy.dp_max_epsilon if cfg.metric_dp == "none" else min(cfg.metric_epsilon, policy.dp_max_epsilon)
    return CountMechanism(policy.dp_mechanism, epsilon, policy.dp_delta)


def _is_request(msg: Message) -> bool:
    mtype = msg.metadata.message_type
    return mtype in (MessageType.TRAIN, MessageType.EVALUATE) and "config" in msg.content


def site_guard(msg: Message, context: Context, call_next: ClientAppCallable, *,
               ledger: LedgerSource | None = None) -> Message:
    """Check the request against the site's policy before any data is touched; keep errors at the site.

    ``ledger`` (bound when the app is built) is the site's privacy ledger, the one :func:`metric_dp`
    charges: a request its lifetime budget cannot pay for is refused here.

    A refusal leaves as ``Error(POLICY_REFUSAL, "site policy: <field>")``; any exception as
    ``Error(SITE_ERROR, "site error")``. Exception text, paths and file names go to the
    site's own log only (Flower would otherwise send the exception text to the server).
    """
    relay_simulated_site_log(context.node_config, context.node_id)
    try:
        if _is_request(msg):
            policy = site_policy(context.node_config)
            cfg, _ = request_config(msg)
            check_request(cfg, policy, is_train=msg.metadata.message_type == MessageType.TRAIN,
                          node_config=context.node_config)
            mech = release_epsilon(cfg, policy)
            needed = mech.epsilon if mech.kind != "none" else 0.0
            if msg.metadata.message_type == MessageType.TRAIN and cfg.dp_epsilon > 0:
                needed += cfg.dp_epsilon  # the DP-SGD update itself (Opacus' accountant) is a release too
            if needed and _ledger(ledger, context.node_config).spent()[0] + needed > policy.dp_lifetime_epsilon + 1e-9:
                raise Refusal("dp.lifetime-epsilon")
        return call_next(msg, context)
    except Refusal as refusal:
        log.warning("request refused by the site policy: %s", refusal.field)
        return Message(Error(code=POLICY_REFUSAL, reason=f"site policy: {refusal.field}"), reply_to=msg)
    except PolicyError:
        log.exception("the site policy cannot be used")
        return Message(Error(code=SITE_ERROR, reason="site policy file"), reply_to=msg)
    except Exception:  # noqa: BLE001 - whatever it was, its text stays here
        log.exception("site error while handling a %s message", msg.metadata.message_type)
        return Message(Error(code=SITE_ERROR, reason="site error"), reply_to=msg)


def protocol_guard(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Send a reply only if it holds exactly what the request asked for (:mod:`fedaegis.shared.reply.schema`).

    A violating reply is withheld and replaced by an error with a fixed reason; what was
    wrong goes to the site's log, so a bug in site code can never put per-sample values
    on the wire, not even in an error message.
    """
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    is_train = msg.metadata.message_type == MessageType.TRAIN
    expected = None
    if is_train and ARRAYS_KEY in msg.content:
        expected = {k: tuple(a.shape) for k, a in msg.content[ARRAYS_KEY].items()}
    cfg = request_config(msg)[0] if _is_request(msg) else None
    problems = check_reply(reply.content, is_train=is_train, expected_arrays=expected, request=cfg)
    if not problems:
        return reply
    log.error("reply withheld, it breaks the privacy protocol: %s", "; ".join(problems))
    return Message(Error(code=PROTOCOL_VIOLATION, reason="privacy protocol"), reply_to=msg)


def _keep(msg: Message) -> tuple[str, ...]:
    return ("num-examples",) if msg.metadata.message_type == MessageType.TRAIN else ()


def cell_suppression(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Withhold every count computed on fewer than the site's ``min-cell-size`` samples.

    Small cells (a site with 4 test images, an attack run on 3) identify patients as
    surely as per-sample values do; they are zeroed and marked suppressed. The floor is
    the site policy's; a request may only raise it.
    """
    reply = call_next(msg, context)
    if reply.has_error() or METRICS_KEY not in reply.content or not _is_request(msg):
        return reply
    cfg, _ = request_config(msg)
    k = max(cfg.min_cell_size, site_policy(context.node_config).release_min_cell_size)
    metrics = suppress_small_cells(dict(reply.content[METRICS_KEY]), k, keep=_keep(msg))  # type: ignore[arg-type]
    reply.content[METRICS_KEY] = MetricRecord(metrics)
    return reply


def metric_dp(msg: Message, context: Context, call_next: ClientAppCallable, *,
              ledger: LedgerSource | None = None) -> Message:
    """Put the reply in its release form, noise it under the site's DP and charge the site's ledger.

    Counts become integers and sums are rounded to the release grid; the mechanism and
    epsilon are the site policy's (see :func:`release_epsilon`); every release, noised or
    not, is written to the persistent ledger before it leaves. A release the lifetime
    budget cannot pay for is withheld (``dp-withheld-count = 1``). ``ledger``: see :func:`site_guard`.
    """
    reply = call_next(msg, context)
    if reply.has_error() or METRICS_KEY not in reply.content or not _is_request(msg):
        return reply
    cfg, server_round = request_config(msg)
    policy = site_policy(context.node_config)
    is_train = msg.metadata.message_type == MessageType.TRAIN
    raw: Mapping[str, int | float] = dict(reply.content[METRICS_KEY])  # type: ignore[arg-type]
    metrics = reply_schema.release_form(raw, cfg, is_train)
    mech = release_epsilon(cfg, policy)
    released, (eps, delta) = privatize(metrics, mech, cfg=cfg, is_train=is_train, keep=_keep(msg))
    book = _ledger(ledger, context.node_config)
    charged = book.charge(
        lifetime=policy.dp_lifetime_epsilon, epsilon=eps, delta=delta, run=str(msg.metadata.run_id),
        round=server_round, kind=str(msg.metadata.message_type), values=len(released), clear=mech.kind == "none")
    if not charged:
        released = withhold(metrics, cfg, is_train, keep=_keep(msg))
        eps = 0.0
    if is_train and ARRAYS_KEY in reply.content:  # the update: DP-SGD's epsilon (Opacus' accountant), or clear
        dpsgd = float(raw.get("dpsgd.epsilon-sum", 0.0))
        book.charge(
            lifetime=float("inf"), epsilon=dpsgd, delta=cfg.dp_delta if dpsgd else 0.0, run=str(msg.metadata.run_id),
            round=server_round, kind="train-update", values=0, clear=dpsgd == 0)
    if mech.kind != "none":
        released[EPSILON_KEY] = eps
        released.setdefault("dp-withheld-count", 0)
    reply.content[METRICS_KEY] = MetricRecord(reply_schema.release_form(released, cfg, is_train))
    return reply
