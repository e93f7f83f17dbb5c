"""The audit's grid: every reply checked where it enters the server, a violating one quarantined.

Flower and the server's :class:`~fedaegis.server.audit.AuditingGrid` are imported here, at
module level, so the ``audit`` command (loaded with the CLI) stays free of them until it runs.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field

from flwr.app import Error, Message, MetricRecord
from flwr.serverapp import Grid

from ..server.audit import AuditEntry, AuditingGrid
from ..shared.reply.protocol import METRICS_KEY

QUARANTINED = 7302  # error code the server sees in place of a violating reply


@dataclass
class ReplyVerdict:
    """What one reply held and whether the protocol allows it."""

    node_id: int
    round: int | None
    message_type: str
    records: list[str] = field(default_factory=list)  # "metrics (MetricRecord)", ...
    metrics: list[str] = field(default_factory=list)  # metric names only, never values
    violations: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def verdict(self) -> str:
        return "VIOLATION" if self.violations else ("ERROR" if self.error else "ok")


class QuarantiningGrid(AuditingGrid):
    """An :class:`AuditingGrid` that hands the server an error in place of each violating reply.

    It wraps the server's grid inside Flower's simulation process (``live_grid``), and the
    replayed exchanges in ours, where its verdicts are read.
    """

    def __init__(self, grid: Grid) -> None:
        super().__init__(grid)
        self.verdicts: list[ReplyVerdict] = []
        self.requests = 0

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        self.requests += len(messages)
        return super().push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._quarantine(list(super().pull_messages(message_ids)))

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        self.requests += len(messages)
        return self._quarantine(list(super().send_and_receive(messages, timeout=timeout)))

    def _quarantine(self, replies: list[Message]) -> list[Message]:
        entries = self.entries[len(self.entries) - len(replies):]
        out = []
        for reply, entry in zip(replies, entries):
            self.verdicts.append(self._verdict(reply, entry))
            if entry.problems:
                reason = "quarantined by fedaegis audit: " + "; ".join(entry.problems)
                reply = Message(Error(code=QUARANTINED, reason=reason), metadata=copy.copy(reply.metadata))
            out.append(reply)
        return out

    def _verdict(self, reply: Message, entry: AuditEntry) -> ReplyVerdict:
        request = getattr(self, "_requests", {}).get(entry.node_id)
        rnd = None
        if request is not None and "config" in request.content:
            value = request.content["config"].get("server-round")
            rnd = int(value) if isinstance(value, int | float) else None
        verdict = ReplyVerdict(entry.node_id, rnd, entry.message_type, violations=list(entry.problems),
                               error=entry.error)
        if not reply.has_error():
            verdict.records = [f"{k} ({type(v).__name__})" for k, v in reply.content.items()]
            metrics = reply.content[METRICS_KEY] if METRICS_KEY in reply.content else None
            if isinstance(metrics, MetricRecord):
                verdict.metrics = sorted(metrics.keys())
        return verdict


def quarantine_grid(inner: Grid) -> QuarantiningGrid:
    """The ``live_grid`` factory Flower's simulation process calls with the server's grid."""
    return QuarantiningGrid(inner)
