"""The ServerApp that ``fedaegis simulate`` submits: fedaegis' own, with the run's grid hooks.

Under Flower's Simulation Runtime the ServerApp runs in Flower's ``flwr-simulation`` process,
not in the caller's, so what a caller wants to see of the grid (an audit, a test's
:class:`~fedaegis.server.audit.AuditingGrid`) cannot be handed over as an object. This app
records every exchange with the sites (requests and replies, as Flower's own protobuf) to the
file named by ``FEDAEGIS_EXCHANGE_LOG``; the caller replays them through its wrapper when the
run has ended (:func:`replay`), so the wrapper sees each reply exactly as the server received
it. A wrapper that must act while the run goes on (the audit's quarantine) is named by
``FEDAEGIS_LIVE_GRID`` (``module:attr``) and wraps the recording grid here. Both variables are
set only in the environment of the run's private SuperLink.
"""

from __future__ import annotations

import importlib
import os
import pickle
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid

from ..server.app import make_server_app
from ..server.grid import DelegatingGrid

EXCHANGE_LOG = "FEDAEGIS_EXCHANGE_LOG"
LIVE_GRID = "FEDAEGIS_LIVE_GRID"

Event = tuple[str, list[bytes], list[Any]]  # kind, requests (protobuf), replies (protobuf) or ids


def _dump(messages: Iterable[Message]) -> list[bytes]:
    from flwr.common.serde import message_to_proto

    return [message_to_proto(m).SerializeToString() for m in messages]


def _load(blobs: Iterable[bytes]) -> list[Message]:
    from flwr.common.serde import message_from_proto
    from flwr.proto.message_pb2 import Message as ProtoMessage  # pylint: disable=no-name-in-module

    out = []
    for blob in blobs:
        proto = ProtoMessage()
        proto.ParseFromString(blob)
        out.append(message_from_proto(proto))
    return out


class RecordingGrid(DelegatingGrid):
    """Appends every exchange to ``path`` (a pickle stream of :data:`Event`) as it happens."""

    def __init__(self, inner: Grid, path: Path) -> None:
        super().__init__(inner)
        self.path = path

    def _write(self, event: Event) -> None:
        with self.path.open("ab") as f:
            pickle.dump(event, f)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        ids = list(self.inner.push_messages(messages))
        self._write(("push", _dump(messages), ids))
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        message_ids = list(message_ids)
        replies = list(self.inner.pull_messages(message_ids))
        self._write(("pull", [], [message_ids, _dump(replies)]))
        return replies

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        replies = list(self.inner.send_and_receive(messages, timeout=timeout))
        self._write(("sr", _dump(messages), _dump(replies)))
        return replies


def read_events(path: Path) -> list[Event]:
    """The exchanges a :class:`RecordingGrid` wrote (none if the server never reached the sites)."""
    events: list[Event] = []
    if not path.exists():
        return events
    with path.open("rb") as f:
        while True:
            try:
                events.append(pickle.load(f))  # noqa: S301 - our own file, written by our ServerApp
            except EOFError:
                return events


class _ReplayGrid(DelegatingGrid):
    """Answers each call with what the recorded run's grid answered."""

    def __init__(self, events: list[Event]) -> None:
        self.events = list(events)

    def _next(self, kind: str) -> Event:
        event = self.events.pop(0)
        if event[0] != kind:
            raise RuntimeError(f"replay out of order: recorded {event[0]}, replayed {kind}")
        return event

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return list(self._next("push")[2])

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return _load(self._next("pull")[2][1])

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return _load(self._next("sr")[2])

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"a replayed grid has no {name!r}")


def replay(events: list[Event], wrap_grid: Callable[[Grid], Grid]) -> Grid:
    """Pass the recorded exchanges through ``wrap_grid``'s grid, in order; returns that grid."""
    grid = wrap_grid(_ReplayGrid(events))
    for kind, requests, result in events:
        if kind == "push":
            list(grid.push_messages(_load(requests)))
        elif kind == "pull":
            list(grid.pull_messages(result[0]))
        else:
            list(grid.send_and_receive(_load(requests)))
    return grid


def _load_ref(ref: str) -> Callable[[Grid], Grid]:
    module, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _runtime_grid(grid: Grid) -> Grid:
    if path := os.environ.get(EXCHANGE_LOG):
        grid = RecordingGrid(grid, Path(path))
    if ref := os.environ.get(LIVE_GRID):
        grid = _load_ref(ref)(grid)
    return grid


app = make_server_app(wrap_grid=_runtime_grid)
