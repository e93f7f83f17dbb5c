"""The live progress display of ``fedaegis simulate`` and ``fedaegis evaluate`` (Rich).

A run's progress arrives as events (:mod:`fedaegis.server.progress`): a train or evaluate
step was sent to some sites, each site's reply came back (or failed), the step ended; in a
simulation also each site's own ``work`` events (:mod:`fedaegis.client.site_log`: how far its
training or attacks are). :class:`RunProgress` folds them into the run's state and renders it:
the round, which sites have answered in the current step and how far the others are, elapsed
time and an estimate of the time left
(the mean time of a finished round times the rounds left, shown once a round has ended;
the final round, where attacks run by default, takes longer). It is pure: events in, a renderable out, so tests feed it recorded
events without a terminal. :func:`live` shows it only on a terminal and unless asked to be
quiet, so CI and pipes see the plain log lines as before.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

MARKS = {"waiting": ("…", "dim"), "ok": ("✓", "green"), "failed": ("✗", "red")}


def duration(seconds: float | None) -> str:
    """``1h02m``, ``3m05s``, ``42s``; ``?`` when unknown."""
    if seconds is None or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


@dataclass
class RunProgress:
    """The state of a federated run, folded from its progress events."""

    rounds: int = 0
    round: int = 0
    phase: str = ""
    first_round: int = 0  # the first round this process saw (a resumed run starts later)
    started: float | None = None  # when the display started (default: the first event)
    round_started: dict[int, float] = field(default_factory=dict)
    round_ended: dict[int, float] = field(default_factory=dict)
    sites: dict[int, str] = field(default_factory=dict)  # node -> waiting | ok | failed, in this step
    names: dict[int, int] = field(default_factory=dict)  # node -> 1, 2, ... in order of first request
    work: dict[int, str] = field(default_factory=dict)  # node -> "training 2/5 epoch", in this step (simulation)
    finished: bool = False

    def update(self, event: dict[str, Any]) -> None:
        kind, t = event.get("event"), float(event.get("t", time.time()))
        self.started = t if self.started is None else self.started
        if kind == "sent":
            self.round, self.phase = int(event.get("round", 0)), str(event.get("phase", ""))
            self.rounds = int(event.get("rounds", 0)) or self.rounds
            self.first_round = self.first_round or self.round
            self.round_started.setdefault(self.round, t)
            for node in event.get("sites", []):
                self.names.setdefault(int(node), len(self.names) + 1)
            self.sites = {int(node): "waiting" for node in event.get("sites", [])}
            self.work = {}
        elif kind == "work" and int(event.get("site", -1)) in self.sites:
            self.work[int(event["site"])] = (f"{event.get('task', '')} {event.get('done', 0)}/{event.get('total', 0)}"
                                             f" {event.get('unit', '')}".strip())
        elif kind == "reply":
            node = int(event.get("site", 0))
            self.names.setdefault(node, len(self.names) + 1)
            self.sites[node] = "ok" if event.get("ok") else "failed"
        elif kind == "done" and event.get("phase") == "evaluate":
            self.round_ended[int(event.get("round", self.round))] = t
            self.finished = bool(self.rounds) and int(event.get("round", 0)) >= self.rounds

    def remaining(self, now: float) -> float | None:
        """Seconds left: finished rounds' mean time times the rounds left, minus this round's time so far."""
        if self.finished:
            return 0.0
        if not self.rounds or not self.round:
            return None
        done = [self.round_ended[r] - self.round_started[r] for r in self.round_ended if r in self.round_started]
        if not done:  # no round has ended: nothing to go by (training and evaluation differ too much)
            return None
        per_round = sum(done) / len(done)
        in_round = 0.0 if self.round in self.round_ended else now - self.round_started.get(self.round, now)
        return max(per_round - in_round, 0.0) + per_round * (self.rounds - self.round)

    def render(self, now: float | None = None) -> RenderableType:
        now = time.time() if now is None else now
        elapsed = now - self.started if self.started is not None else 0.0
        if not self.round:
            return Text(f"waiting for the first round ({duration(elapsed)})", style="dim")
        head = Text.assemble(
            ("round ", "bold"), (f"{self.round}/{self.rounds or '?'}", "bold"),
            f"  {self.phase}" if not self.finished else "  done",
            f"  elapsed {duration(elapsed)}",
            f"  left ~{duration(self.remaining(now))}" if self.remaining(now) is not None
            else "  left: known after round 1",
        )
        answered = sum(s != "waiting" for s in self.sites.values())
        table = Table(box=None, show_header=False, pad_edge=False, padding=(0, 1))
        row = []
        for node in sorted(self.sites, key=lambda n: self.names.get(n, 0)):
            mark, style = MARKS[self.sites[node]]
            doing = f" {self.work[node]}" if self.sites[node] == "waiting" and node in self.work else ""
            row.append(Text(f"site {self.names.get(node, '?')} {mark}{doing}", style=style))
        per_row = 4 if self.work else 8
        for i in range(0, len(row), per_row):
            table.add_row(*row[i:i + per_row])
        summary = Text(f"{answered}/{len(self.sites)} sites answered the {self.phase} request"
                       + (f" ({sum(s == 'failed' for s in self.sites.values())} failed)"
                          if any(s == "failed" for s in self.sites.values()) else ""), style="dim")
        return Group(head, table, summary)


@contextlib.contextmanager
def live(console: Console, enabled: bool) -> Iterator[Callable[[dict[str, Any]], None] | None]:
    """Show a :class:`RunProgress` on ``console`` while the block runs; yields its event sink.

    Yields None (no display, the plain log lines only) unless ``enabled`` and ``console`` is a
    terminal. Events may come from another thread (the relay of the run's log).
    """
    if not (enabled and console.is_terminal):
        yield None
        return
    state, lock = RunProgress(started=time.time()), threading.Lock()

    class _View:
        def __rich__(self) -> RenderableType:
            with lock:
                return state.render()

    def sink(event: dict[str, Any]) -> None:
        with lock:
            state.update(event)

    with Live(_View(), console=console, refresh_per_second=2, transient=True):
        yield sink


def attack_progress(console: Console, enabled: bool) -> Progress | None:
    """A progress bar for ``fedaegis evaluate``'s attacks (elapsed, time left), on a terminal only."""
    if not (enabled and console.is_terminal):
        return None
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("left"), TimeRemainingColumn(), console=console, transient=True)
