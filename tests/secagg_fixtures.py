"""Sites running the real secure-aggregation code in process, and a grid that delivers to them.

Each site has an ECDSA P-256 key in OpenSSH format (as ``deploy/make-node-keys.sh`` makes
for SuperNode authentication) and the consortium's roster of their ``.pub`` lines. The
grid hands every message to the site's real handlers (``answer_query``, the
``secure_aggregation`` mod over a handler that replies the site's counts), so a test can
play an honest or a curious server against them.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict

from fedaegis.client.secure_aggregation import answer_query, secure_aggregation

RUN = 7


def write_keys(folder: Path, names: list[str]) -> Path:
    """``folder/NAME`` (private, OpenSSH) and ``folder/roster.pub`` (every public line)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for name in names:
        key = ec.generate_private_key(ec.SECP256R1())
        (folder / name).write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                      serialization.NoEncryption()))
        lines.append(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                   serialization.PublicFormat.OpenSSH).decode())
    (folder / "roster.pub").write_text("\n".join(lines) + "\n")
    return folder / "roster.pub"


class LocalGrid:
    """Delivers each message to the addressed site's real handlers; ``dead`` sites never answer."""

    def __init__(self, tmp_path: Path, values: dict[int, dict[str, float]],
                 arrays: dict[int, dict[str, np.ndarray]] | None = None, min_sites: int = 3) -> None:
        self.run = SimpleNamespace(run_id=RUN)
        self.values, self.arrays = values, arrays or {}
        roster = write_keys(tmp_path / "keys", [f"site-{n}" for n in values])
        self.sites = {
            n: Context(run_id=RUN, node_id=n, state=RecordDict(), run_config={},
                       node_config={"secagg-signing-key": str(tmp_path / "keys" / f"site-{n}"),
                                    "secagg-roster": str(roster), "secagg-min-sites": min_sites})
            for n in values
        }
        self.dead: set[int] = set()
        self.die_on: dict[int, str] = {}  # node -> message type at which it dies
        self.held: list[Message] = []  # replies a test holds back (late sites)
        self.hold: set[int] = set()  # their train/evaluate replies are held back

    def handler(self, msg: Message, context: Context) -> Message:
        content = RecordDict({"metrics": MetricRecord(dict(self.values[context.node_id]))})
        if msg.metadata.message_type == MessageType.TRAIN:
            content["arrays"] = ArrayRecord({k: Array(v) for k, v in self.arrays[context.node_id].items()})
        return Message(content, reply_to=msg)

    def deliver(self, msg: Message) -> Message:
        node = msg.metadata.dst_node_id
        if msg.metadata.message_type == MessageType.QUERY:
            return answer_query(msg, self.sites[node])
        return secure_aggregation(msg, self.sites[node], self.handler)

    def send_and_receive(self, messages, timeout=None) -> list[Message]:
        out = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            if self.die_on.get(node) == msg.metadata.message_type:
                self.dead.add(node)
            if node in self.dead:
                continue
            reply = self.deliver(msg)
            late = node in self.hold and msg.metadata.message_type != MessageType.QUERY
            (self.held if late else out).append(reply)
        return out


def planned(nodes, kind: str, config: dict | None = None, arrays: dict[str, np.ndarray] | None = None) -> list[Message]:
    """The inner strategy's messages: one per site, with a config (and the global model for training)."""
    out = []
    for n in nodes:
        content = RecordDict({"config": ConfigRecord(dict(config or {}))})
        if arrays is not None:
            content["arrays"] = ArrayRecord({k: Array(v) for k, v in arrays.items()})
        out.append(Message(content, dst_node_id=n, message_type=kind))
    return out


def query(grid: LocalGrid, node: int, cfg: dict) -> Message:
    return grid.deliver(Message(RecordDict({"config": ConfigRecord(cfg)}), dst_node_id=node,
                                message_type=MessageType.QUERY))


def refused(reply: Message, why: str) -> bool:
    return reply.has_error() and "secure aggregation refused" in reply.error.reason and why in reply.error.reason

