"""Flower client mods: small wrappers around the ClientApp, composable like Flower's own."""

from __future__ import annotations

import logging

from flwr.app import Context, Error, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable

from ..shared.protocol import ARRAYS_KEY, check_reply

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
