"""Secure aggregation of evaluation replies and, if the run asks, of training updates.

A strategy wrapper (like Flower's DP wrappers) that runs SecAgg+ (see
:mod:`fedaegis.shared.reply.secagg`) around the inner strategy's train and/or evaluate
messages: a ``keys`` and a ``share`` query, the masked replies, an ``unmask`` query
to the survivors; the server learns the sums over the survivors only. Training
under it is FedAvg computed from the sums (sum of n*w over sum of n): a robust rule
needs the individual updates this hides, which :class:`RunConfig` refuses.
Flower's SecAgg+ workflow needs its legacy ``DefaultWorkflow``, covers training
only, and its masks come from 32-bit seeds, hence this wrapper over its primitives.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from ..shared.reply import secagg
from ..shared.reply.protocol import ARRAYS_KEY, METRICS_KEY, SECAGG_KEY
from .aggregation import derived_ratios

log = logging.getLogger("fedaegis")

STAGE = "secagg-stage"


@dataclass
class _Exchange:
    """One key exchange: who took part, their mask keys, who holds whose shares."""

    context: str
    nodes: list[int]
    pk1: dict[int, bytes]
    near: dict[int, list[int]]
    received: dict[int, list[int]] = field(default_factory=dict)  # node -> neighbours whose shares it got


class SecureAggregation(Strategy):
    """Delegate to ``inner``; mask evaluation replies (and training updates if ``train``) under SecAgg+."""

    def __init__(self, inner: Strategy, *, train: bool = False, evaluate: bool = True,
                 neighbours: int = secagg.DEFAULT_NEIGHBOURS, timeout: float = 3600.0) -> None:
        self.inner, self.train, self.evaluate = inner, train, evaluate
        self.neighbours, self.timeout = neighbours, timeout
        self._grid: Grid | None = None
        self._exchange: _Exchange | None = None
        self._global: ArrayRecord | None = None

    def summary(self) -> None:
        self.inner.summary()
        what = " and ".join(p for p, on in (("training updates", self.train), ("evaluation replies", self.evaluate)) if on)
        log.info("%s are securely aggregated (SecAgg+, %d neighbours)", what, self.neighbours)

    # ------------------------------------------------------------ Strategy
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        planned = list(self.inner.configure_train(server_round, arrays, config, grid))
        if not self.train:
            return planned
        self._global = arrays
        return self._setup(grid, planned, f"{grid.run.run_id}/{server_round}/train", MessageType.TRAIN)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if not self.train:
            return self.inner.aggregate_train(server_round, replies)
        result = self._reveal(server_round, list(replies))
        if result is None:
            return None, None
        totals, arrays = result
        n = totals.get("num-examples", 0.0)
        if n <= 0 or self._global is None:
            log.warning("round %d: no training examples in the secure sum; the model is kept", server_round)
            return None, MetricRecord({**totals, **derived_ratios(totals)})
        mean = {k: (arrays[k] / n).astype(self._global[k].numpy().dtype) for k in self._global.keys()}
        return ArrayRecord({k: Array(v) for k, v in mean.items()}), MetricRecord({**totals, **derived_ratios(totals)})

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        planned = list(self.inner.configure_evaluate(server_round, arrays, config, grid))
        if not self.evaluate:
            return planned
        return self._setup(grid, planned, f"{grid.run.run_id}/{server_round}/evaluate", MessageType.EVALUATE)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        if not self.evaluate:
            return self.inner.aggregate_evaluate(server_round, replies)
        result = self._reveal(server_round, list(replies))
        if result is None:
            return None
        totals, _ = result
        return MetricRecord({**totals, **derived_ratios(totals)})

    # ------------------------------------------------------------ protocol
    def _ask(self, nodes: Iterable[int], cfg: dict | Callable[[int], dict]) -> dict[int, dict]:
        """One query to ``nodes`` (``cfg``, or ``cfg(node)`` each); their ``secagg`` records (refusals logged)."""
        assert self._grid is not None
        queries = [Message(RecordDict({"config": ConfigRecord(cfg(n) if callable(cfg) else cfg)}), dst_node_id=n,
                           message_type=MessageType.QUERY) for n in nodes]
        out = {}
        for r in self._grid.send_and_receive(queries, timeout=self.timeout):
            if r.has_error():
                log.warning("secure aggregation: node %d: %s", r.metadata.src_node_id, r.error.reason)
            elif SECAGG_KEY in r.content:
                out[r.metadata.src_node_id] = dict(r.content[SECAGG_KEY])
        return out

    def _setup(self, grid: Grid, planned: list[Message], context: str, kind: str) -> list[Message]:
        """Key exchange and share distribution; returns the planned messages carrying each site's shares."""
        self._grid, self._exchange = grid, None
        keys = self._ask([m.metadata.dst_node_id for m in planned], {STAGE: "keys", "secagg-context": context})
        nodes = sorted(keys)
        if len(nodes) < 2:
            log.warning("secure aggregation needs at least 2 sites; %d answered the key exchange", len(nodes))
            return []
        near = secagg.neighbours(nodes, context, self.neighbours)
        signed = all("signature" in keys[n] for n in nodes)

        def share_config(node: int) -> dict:
            """Everyone's ids, and the keys of the site and its neighbours only (O(neighbours) bytes)."""
            own = [node, *near[node]]
            cfg = {STAGE: "share", "secagg-context": context, "secagg-nodes": nodes, "secagg-key-nodes": own,
                   "secagg-neighbours": self.neighbours,
                   "secagg-pk1": [keys[n]["pk1"] for n in own], "secagg-pk2": [keys[n]["pk2"] for n in own]}
            if signed:
                cfg["secagg-signatures"] = [keys[n]["signature"] for n in own]
                cfg["secagg-signers"] = [keys[n]["signer"] for n in own]
            return cfg

        shares = self._ask(nodes, share_config)
        inbox: dict[int, list[tuple[int, bytes]]] = {n: [] for n in shares}
        for src, rec in shares.items():
            for dst, ct in zip(rec.get("dst", []), rec.get("ciphertexts", [])):
                if dst in inbox:
                    inbox[dst].append((src, ct))
        ex = _Exchange(context, nodes, {n: keys[n]["pk1"] for n in nodes}, near)
        messages = []
        for m in planned:
            node = m.metadata.dst_node_id
            if node not in inbox:
                continue
            ex.received[node] = [src for src, _ in inbox[node]]
            content = RecordDict({k: v for k, v in m.content.items() if k != "config"})
            content["config"] = ConfigRecord({**dict(m.content["config"]), "secagg-context": context,
                                              "secagg-src": [s for s, _ in inbox[node]],
                                              "secagg-ciphertexts": [c for _, c in inbox[node]]})
            messages.append(Message(content, dst_node_id=node, message_type=kind))
        self._exchange = ex
        return messages

    def _reveal(self, server_round: int, replies: list[Message]) -> tuple[dict[str, float], dict[str, np.ndarray]] | None:
        """Sum the masked replies, ask the survivors for shares, remove the masks; None if impossible."""
        ex = self._exchange
        masked = {r.metadata.src_node_id: r for r in replies if not r.has_error() and METRICS_KEY in r.content}
        if ex is None or len(masked) < 2:
            log.warning("round %d: fewer than 2 masked replies; nothing can be revealed", server_round)
            return None
        survivors, dropped = sorted(masked), sorted(set(ex.received) - set(masked))
        if dropped:
            log.warning("round %d: sites %s dropped out after the key exchange; their masks are removed", server_round, dropped)
        names = sorted(masked[survivors[0]].content[METRICS_KEY].keys())
        first = masked[survivors[0]].content
        array_keys = sorted(first[ARRAYS_KEY].keys()) if ARRAYS_KEY in first else []
        shapes = {k: tuple(first[ARRAYS_KEY][k].shape) for k in array_keys}

        def vector(msg: Message) -> np.ndarray:
            metrics = msg.content[METRICS_KEY]
            if sorted(metrics.keys()) != names or (array_keys and sorted(msg.content[ARRAYS_KEY].keys()) != array_keys):
                raise ValueError("secure aggregation: sites sent different names; masks cannot cancel")
            parts = [np.array([int(metrics[n]) for n in names], dtype=np.uint64)]
            parts += [msg.content[ARRAYS_KEY][k].numpy().astype(np.uint64).ravel() for k in array_keys]
            return np.concatenate(parts)

        total = np.zeros(len(names) + sum(int(np.prod(s)) for s in shapes.values()), dtype=np.uint64)
        for node in survivors:
            total = secagg.add(total, vector(masked[node]))
        answers = self._ask(survivors, {STAGE: "unmask", "secagg-context": ex.context,
                                        "secagg-survivors": survivors, "secagg-dropped": dropped})
        b_shares: dict[int, list[bytes]] = defaultdict(list)
        sk_shares: dict[int, list[bytes]] = defaultdict(list)
        for rec in answers.values():
            for n, share in zip(rec.get("b-nodes", []), rec.get("b-shares", [])):
                b_shares[n].append(share)
            for n, share in zip(rec.get("sk-nodes", []), rec.get("sk-shares", [])):
                sk_shares[n].append(share)
        try:
            for u in survivors:
                b = secagg.rebuild(b_shares[u], secagg.threshold(len(ex.near[u]) + 1))
                total = secagg.sub(total, secagg.prg(b, ex.context, total.size))
            for d in dropped:
                partners = [u for u in survivors if d in ex.received.get(u, [])]
                if not partners:
                    continue
                seed = secagg.rebuild(sk_shares[d], secagg.threshold(len(ex.near[d]) + 1))
                if len(seed) != secagg.SECRET_BYTES:
                    raise ValueError("the shares do not rebuild a mask key")
                sk = secagg.seeded_keypair(seed)[0]
                seeds = secagg.pair_seeds(sk, {u: ex.pk1[u] for u in partners})
                for u in partners:  # u added +mask if u < d, -mask otherwise
                    m = secagg.prg(seeds[u], ex.context, total.size)
                    total = secagg.sub(total, m) if u < d else secagg.add(total, m)
        except ValueError as exc:
            log.warning("round %d: %s; the sum cannot be revealed", server_round, exc)
            return None
        plain = secagg.decode(total)
        totals = {n.removeprefix(secagg.PREFIX): float(v) for n, v in zip(names, plain[:len(names)])}
        arrays, pos = {}, len(names)
        for k in array_keys:
            size = int(np.prod(shapes[k])) if shapes[k] else 1
            arrays[k] = plain[pos:pos + size].reshape(shapes[k])
            pos += size
        return totals, arrays

