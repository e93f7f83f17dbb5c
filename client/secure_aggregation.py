"""Secure aggregation at the site: key exchange, masked evaluation replies, dropout unmasking.

See :mod:`fedaegis.shared.secagg` for the scheme. The key exchange and the
unmasking are query messages (handled by :func:`answer_query`); masking is a
client mod, so it wraps the evaluation reply exactly as it will be sent.
"""

from __future__ import annotations

from flwr.app import ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp.typing import ClientAppCallable

from ..shared import secagg
from ..shared.protocol import METRICS_KEY, SECAGG_KEY

SECAGG_STATE = "fedaegis.secagg"


def answer_query(msg: Message, context: Context) -> Message:
    """The server's secure-aggregation queries: ``keys`` (a fresh key pair) or ``unmask``."""
    config = msg.content["config"]
    stage = config.get("secagg-stage")
    if stage == "keys":
        sk, pk = secagg.new_keypair()
        context.state[SECAGG_STATE] = ConfigRecord({"sk": sk})
        return Message(RecordDict({SECAGG_KEY: ConfigRecord({"public-key": pk})}), reply_to=msg)
    if stage == "unmask":
        state = context.state[SECAGG_STATE]
        names = list(state["names"])  # type: ignore[arg-type]
        dropped = dict(zip(config["secagg-dropped"], config["secagg-keys"]))  # type: ignore[arg-type]
        masks = secagg.mask_sum(state["sk"], context.node_id, dropped,  # type: ignore[arg-type]
                                str(config["secagg-context"]).encode(), len(names))
        record = MetricRecord({secagg.PREFIX + n: int(v) for n, v in zip(names, masks)})
        return Message(RecordDict({METRICS_KEY: record}), reply_to=msg)
    raise ValueError(f"unknown query stage {stage!r}")


def secure_aggregation(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Mask an evaluation reply with the pairwise masks of every peer the server named."""
    reply = call_next(msg, context)
    config = msg.content["config"] if "config" in msg.content else None
    if (
        msg.metadata.message_type != MessageType.EVALUATE or config is None or "secagg-peers" not in config
        or reply.has_error() or METRICS_KEY not in reply.content
    ):
        return reply
    state = context.state[SECAGG_STATE]
    metrics = dict(reply.content[METRICS_KEY])
    peers = dict(zip(config["secagg-peers"], config["secagg-keys"]))  # type: ignore[arg-type]
    masked = secagg.masked_metrics(metrics, state["sk"], context.node_id, peers,  # type: ignore[arg-type]
                                   str(config["secagg-context"]).encode())
    state["names"] = sorted(metrics)
    reply.content[METRICS_KEY] = MetricRecord(masked)
    return reply
