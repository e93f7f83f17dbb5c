"""A strategy wrapper that hands each finished round to a callback (to store it).

It wraps any Flower strategy, the way Flower's DP wrappers do, so robust
aggregation or DP strategies plug in without touching the recording logic.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from ..shared.reply.protocol import METRICS_KEY, POLICY_REFUSAL, REFUSAL_PREFIX
from ..shared.store.schema import utcnow


@dataclass
class RoundOutcome:
    """What the server learnt in one round: global aggregates and each site's aggregates."""

    number: int
    started_at: datetime
    arrays: ArrayRecord
    train_metrics: MetricRecord | None = None
    evaluate_metrics: MetricRecord | None = None
    train_replies: int = 0
    evaluate_replies: int = 0
    failures: int = 0
    site_train: dict[str, dict[str, float]] = field(default_factory=dict)
    site_evaluate: dict[str, dict[str, float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    refusals: list[tuple[str, str, str]] = field(default_factory=list)  # (node, phase, site-policy field)


def ordered(replies: Iterable[Message]) -> list[Message]:
    """Replies in an order fixed by their content, not by which site finished first.

    Aggregation adds floating-point numbers, and their sum depends on the order; sorting by a
    digest of each reply makes the same config and seed give the same stored numbers.
    """
    def key(msg: Message) -> tuple[bool, str]:
        if msg.has_error():
            return True, msg.error.reason
        digest = hashlib.sha256()
        for name, record in sorted(msg.content.items()):
            digest.update(name.encode())
            if isinstance(record, ArrayRecord):
                for key_, array in record.items():
                    digest.update(key_.encode() + array.data)
            elif isinstance(record, MetricRecord | ConfigRecord):
                digest.update(repr(sorted(record.items())).encode())
        return False, digest.hexdigest()

    return sorted(replies, key=key)


class RecordingStrategy(Strategy):
    """Delegate to ``inner`` and call ``on_round_end`` once per completed round.

    ``first_round`` numbers the rounds of a resumed run: Flower's loop counts from 1, and
    the wrapper hands ``inner`` (which puts it in every message's config, the sites' seed),
    the recorder and the database the run's true round number instead.
    """

    def __init__(
        self, inner: Strategy, on_round_end: Callable[[RoundOutcome], None], first_round: int = 1
    ) -> None:
        if first_round < 1:
            raise ValueError(f"first_round: must be >= 1, got {first_round}")
        self.offset = first_round - 1
        self.inner = inner
        self.on_round_end = on_round_end
        self._outcome: RoundOutcome | None = None
        self._sent: list[Message] = []  # the messages of the current train/evaluate step

    def summary(self) -> None:
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        server_round += self.offset
        self._outcome = RoundOutcome(number=server_round, started_at=utcnow(), arrays=arrays)
        self._sent = list(self.inner.configure_train(server_round, arrays, config, grid))
        return self._sent

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        server_round += self.offset
        replies = ordered(replies)
        outcome = self._current(server_round)
        outcome.train_replies = self._collect(replies, outcome.site_train, outcome, "train")
        self._count_missing(replies, outcome)
        arrays, metrics = self.inner.aggregate_train(server_round, replies)
        if arrays is not None:
            outcome.arrays = arrays
        outcome.train_metrics = metrics
        return arrays, metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        server_round += self.offset
        self._sent = list(self.inner.configure_evaluate(server_round, arrays, config, grid))
        return self._sent

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        server_round += self.offset
        replies = ordered(replies)
        outcome = self._current(server_round)
        outcome.evaluate_replies = self._collect(replies, outcome.site_evaluate, outcome, "evaluate")
        self._count_missing(replies, outcome)
        metrics = self.inner.aggregate_evaluate(server_round, replies)
        outcome.evaluate_metrics = metrics
        self.on_round_end(outcome)
        return metrics

    def _count_missing(self, replies: list[Message], outcome: RoundOutcome) -> None:
        """A node that never answered (dead, or past ``round-timeout``) is a failure too.

        Flower returns no message at all for it until the SuperLink has marked the node offline.
        """
        missing = len(self._sent) - len(replies)
        if missing > 0:
            outcome.failures += missing
            answered = {msg.metadata.src_node_id for msg in replies}
            silent = sorted({m.metadata.dst_node_id for m in self._sent} - answered)
            outcome.errors.append(f"{missing} of {len(self._sent)} nodes sent no reply {silent}")
        self._sent = []

    def _current(self, server_round: int) -> RoundOutcome:
        if self._outcome is None or self._outcome.number != server_round:
            raise RuntimeError(f"round {server_round} was not configured through this wrapper")
        return self._outcome

    @staticmethod
    def _collect(
        replies: list[Message], per_site: dict[str, dict[str, float]], outcome: RoundOutcome, phase: str
    ) -> int:
        """Keep each replying site's aggregates; count failed replies and refusals. Returns the successes."""
        ok = 0
        for msg in replies:
            node = str(msg.metadata.src_node_id)
            if msg.has_error():
                outcome.failures += 1
                outcome.errors.append(f"node {node}: {msg.error.reason}")
                if msg.error.code == POLICY_REFUSAL and msg.error.reason.startswith(REFUSAL_PREFIX):
                    outcome.refusals.append((node, phase, msg.error.reason[len(REFUSAL_PREFIX):][:80]))
                continue
            ok += 1
            if METRICS_KEY in msg.content:
                # masked values (secure aggregation) mean nothing alone and are not kept
                values = {k: float(v) for k, v in msg.content[METRICS_KEY].items()  # type: ignore[arg-type]
                          if not k.startswith("secagg.")}
                if values:
                    per_site[node] = values
        return ok
