"""A Grid that sees every reply the sites send and checks each against the privacy protocol.

Wrapping the Grid (not the strategy) means nothing a site sends can bypass the
check: it sits where replies enter the server. Tests use it to prove that replies
hold only aggregates; an audit run uses it before a hospital joins a consortium.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from flwr.app import Message, MessageType
from flwr.serverapp import Grid

from ..shared.run.config import ConfigError
from ..shared.reply.protocol import ARRAYS_KEY, check_reply, request_config
from .grid import DelegatingGrid


@dataclass(frozen=True)
class AuditEntry:
    node_id: int
    message_type: str
    problems: tuple[str, ...]
    error: str = ""


class AuditingGrid(DelegatingGrid):
    """Delegates to ``inner``; keeps every reply (``replies``) and its verdict (``entries``)."""

    def __init__(self, inner: Grid) -> None:
        super().__init__(inner)
        self.replies: list[Message] = []
        self.entries: list[AuditEntry] = []

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        self._requests = {m.metadata.dst_node_id: m for m in messages}
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self.inner.pull_messages(message_ids))
        self._inspect(replies)
        return replies

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        self._requests = {m.metadata.dst_node_id: m for m in messages}
        replies = list(self.inner.send_and_receive(messages, timeout=timeout))
        self._inspect(replies)
        return replies

    @property
    def violations(self) -> list[AuditEntry]:
        return [e for e in self.entries if e.problems]

    def _inspect(self, replies: list[Message]) -> None:
        for reply in replies:
            self.replies.append(reply)
            node = reply.metadata.src_node_id
            mtype = reply.metadata.message_type
            if reply.has_error():
                self.entries.append(AuditEntry(node, mtype, (), reply.error.reason))
                continue
            request = getattr(self, "_requests", {}).get(node)
            is_train = mtype == MessageType.TRAIN
            expected = None
            if is_train and request is not None and ARRAYS_KEY in request.content:
                expected = {k: tuple(a.shape) for k, a in request.content[ARRAYS_KEY].items()}
            cfg = None
            if request is not None and "config" in request.content and mtype != MessageType.QUERY:
                try:
                    cfg = request_config(request.content)[0]  # the reply schema of what was asked
                except ConfigError:
                    cfg = None
            problems = check_reply(reply.content, is_train=is_train, expected_arrays=expected, request=cfg)
            self.entries.append(AuditEntry(node, mtype, tuple(problems)))
