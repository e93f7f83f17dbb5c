"""Secure aggregation of evaluation replies: the server learns only the sum over sites.

A strategy wrapper (like Flower's DP wrappers): before each evaluation it runs a
key-exchange query with the sampled sites, sends every participant its peers'
public keys, and sums the masked replies (see :mod:`fedaegis.shared.secagg`).
Flower's own SecAgg+ covers training messages only; this covers evaluation.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from ..shared import secagg
from ..shared.protocol import METRICS_KEY, SECAGG_KEY
from .aggregation import derived_ratios

log = logging.getLogger("fedaegis")

STAGE = "secagg-stage"


class SecureEvaluation(Strategy):
    """Delegate training to ``inner``; run evaluation under pairwise-masking secure aggregation."""

    def __init__(self, inner: Strategy, timeout: float = 3600.0) -> None:
        self.inner = inner
        self.timeout = timeout
        self._grid: Grid | None = None
        self._keys: dict[int, bytes] = {}
        self._context = ""

    def summary(self) -> None:
        self.inner.summary()
        log.info("evaluation replies are securely aggregated (pairwise masking)")

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return self.inner.aggregate_train(server_round, replies)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        planned = list(self.inner.configure_evaluate(server_round, arrays, config, grid))
        self._grid = grid
        self._context = f"{grid.run.run_id}/{server_round}"
        queries = [
            Message(RecordDict({"config": ConfigRecord({STAGE: "keys"})}), dst_node_id=m.metadata.dst_node_id,
                    message_type=MessageType.QUERY)
            for m in planned
        ]
        self._keys = {}
        for reply in grid.send_and_receive(queries, timeout=self.timeout):
            if not reply.has_error() and SECAGG_KEY in reply.content:
                self._keys[reply.metadata.src_node_id] = reply.content[SECAGG_KEY]["public-key"]  # type: ignore[assignment]
        if len(self._keys) < 2:
            log.warning("secure aggregation needs at least 2 sites; %d answered the key exchange", len(self._keys))
            return []
        nodes = sorted(self._keys)
        messages = []
        for m in planned:
            node = m.metadata.dst_node_id
            if node not in self._keys:
                continue
            cfg = ConfigRecord({**dict(m.content["config"]), "secagg-peers": nodes,
                                "secagg-keys": [self._keys[n] for n in nodes], "secagg-context": self._context})
            content = RecordDict({k: v for k, v in m.content.items() if k != "config"})
            content["config"] = cfg
            messages.append(Message(content, dst_node_id=node, message_type=MessageType.EVALUATE))
        return messages

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        replies = list(replies)
        masked = {
            r.metadata.src_node_id: dict(r.content[METRICS_KEY])
            for r in replies if not r.has_error() and METRICS_KEY in r.content
        }
        if len(masked) < 2:
            log.warning("round %d: fewer than 2 masked replies; nothing can be revealed", server_round)
            return None
        dropped = sorted(set(self._keys) - set(masked))
        corrections = []
        if dropped:
            log.warning("round %d: sites %s dropped out; asking the others to unmask their pairs with them",
                        server_round, dropped)
            corrections = self._corrections(sorted(masked), dropped)
            if len(corrections) != len(masked):
                log.warning("round %d: a survivor did not send its correction; the sum cannot be revealed", server_round)
                return None
        totals = secagg.unmask_total(list(masked.values()), corrections)  # type: ignore[arg-type]
        return MetricRecord({**totals, **derived_ratios(totals)})

    def _corrections(self, survivors: list[int], dropped: list[int]) -> list[dict[str, int]]:
        assert self._grid is not None
        cfg = ConfigRecord({STAGE: "unmask", "secagg-dropped": dropped,
                            "secagg-keys": [self._keys[n] for n in dropped], "secagg-context": self._context})
        queries = [Message(RecordDict({"config": cfg}), dst_node_id=n, message_type=MessageType.QUERY) for n in survivors]
        return [
            dict(r.content[METRICS_KEY])  # type: ignore[misc]
            for r in self._grid.send_and_receive(queries, timeout=self.timeout)
            if not r.has_error() and METRICS_KEY in r.content
        ]
