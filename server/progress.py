"""Progress events: what the server knows of a run while it goes on, as structured log lines.

In simulation the ServerApp runs in Flower's process and reaches ``fedaegis simulate`` only
through the run's log stream, so progress travels the way its log lines do: one line
``[fedaegis] EVENT {json}`` per event, which the CLI's relay
(:func:`fedaegis.orchestration.simulation._relay`) turns back into a dict and renders
(:mod:`fedaegis.orchestration.progress`). An event holds only what the server already has:
round numbers, which node a request went to, whether its reply came back or failed, and
the clock. Never a value from a reply: those reach the user through the stored run.

:class:`ProgressGrid` sees the requests and each reply as it arrives (Flower's own
``send_and_receive`` returns them all at once, at the end of a phase); it is put under the
ServerApp's grid only where ``$FEDAEGIS_PROGRESS`` is set (``fedaegis simulate`` sets it in the
environment of its private SuperLink), so deployments keep Flower's grid as it is.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from typing import Any

from flwr.app import Message, MessageType
from flwr.serverapp import Grid

from ..shared.reply.protocol import EVENT_LEVEL, PROGRESS_ENV, ROUND_KEY
from .grid import DelegatingGrid

progress_log = logging.getLogger("fedaegis.progress")
PHASES = {MessageType.TRAIN: "train", MessageType.EVALUATE: "evaluate"}


def emit(event: str, **fields: Any) -> None:
    """Log one progress event (dropped unless :func:`log_events` set up its handler)."""
    if progress_log.handlers:
        progress_log.info("%s", json.dumps({"event": event, "t": round(time.time(), 3), **fields},
                                           separators=(",", ":")))


def log_events(prefix: str) -> None:
    """Write events to stderr as ``<prefix>EVENT {json}`` lines (the run's log stream)."""
    if not progress_log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(prefix + EVENT_LEVEL + " %(message)s"))
        progress_log.addHandler(handler)
        progress_log.setLevel(logging.INFO)
        progress_log.propagate = False


def parse_event(message: str) -> dict[str, Any] | None:
    """The event of a relayed ``EVENT`` line's message, or None when it is not one."""
    try:
        event = json.loads(message)
    except ValueError:
        return None
    return event if isinstance(event, dict) and isinstance(event.get("event"), str) else None


def _request_round(msg: Message) -> tuple[int, int]:
    """(round, rounds) a request names (its config holds both); (0, 0) for other messages."""
    if not msg.has_content() or "config" not in msg.content:
        return 0, 0
    config = msg.content["config"]
    return int(config.get(ROUND_KEY, 0) or 0), int(config.get("num-server-rounds", 0) or 0)


class ProgressGrid(DelegatingGrid):
    """Delegates to ``inner``; emits ``sent`` for each train/evaluate step and ``reply`` as each reply arrives.

    ``send_and_receive`` is Flower's own loop (push, then pull until every reply is in or the
    timeout passes), pulling through ``inner`` so that each reply is seen when it arrives.
    """

    def __init__(self, inner: Grid, pull_interval: float = 0.5) -> None:
        super().__init__(inner)
        self.pull_interval = pull_interval

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        phase = PHASES.get(messages[0].metadata.message_type) if messages else None
        if phase is None:  # secure-aggregation queries and the like: Flower's loop, unobserved
            return self.inner.send_and_receive(messages, timeout=timeout)
        rnd, rounds = _request_round(messages[0])
        emit("sent", phase=phase, round=rnd, rounds=rounds, sites=sorted(m.metadata.dst_node_id for m in messages))
        pending = set(self.inner.push_messages(messages))
        end = time.time() + (timeout if timeout is not None else 0.0)
        replies: list[Message] = []
        while timeout is None or time.time() < end:
            got = list(self.inner.pull_messages(pending))
            for reply in got:
                emit("reply", phase=phase, round=rnd, site=reply.metadata.src_node_id, ok=not reply.has_error())
            replies += got
            pending -= {m.metadata.reply_to_message_id for m in got}
            if not pending:
                break
            time.sleep(self.pull_interval)
        emit("done", phase=phase, round=rnd, rounds=rounds, replies=len(replies), sent=len(messages))
        return replies

def progress_grid(grid: Grid) -> Grid:
    """``grid`` under a :class:`ProgressGrid` where ``$FEDAEGIS_PROGRESS`` asks for events."""
    return ProgressGrid(grid) if os.environ.get(PROGRESS_ENV) else grid
