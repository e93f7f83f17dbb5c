"""A simulated site's own log: in the simulation's site log file, its errors on the console.

A real site's log (logger ``fedaegis.site``) stays on the site's machine. In a simulation every
site is a process on the user's machine, so its log is the user's own: every line goes to
``$FEDAEGIS_HOME/logs/simulated-sites.log`` (each skipped file and why, among others), and its
errors also to Flower's log stream with the prefix that ``fedaegis simulate`` relays
(:data:`LOG_PREFIX`), one line each (an exception as its last line), named by the simulated
site's partition. Without this a site's error reached the console only as the fixed reason the
server sees ("site error"). When ``fedaegis simulate`` shows its live display
(``$FEDAEGIS_PROGRESS``), a simulated site's training and attack progress goes the same way as
``work`` events (``[fedaegis] EVENT {json}``, as the server's progress events), shown beside the
site; a real site's stays in its log.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from collections.abc import Callable, Mapping
from contextvars import ContextVar

from pathlib import Path

from ..shared.run.config import fedaegis_home
from ..shared.reply.protocol import EVENT_LEVEL, LOG_PREFIX, PROGRESS_ENV
from ..shared.site.policy import is_simulated

log = logging.getLogger("fedaegis.site")
work_log = logging.getLogger("fedaegis.site-work")  # a simulated site's progress events (no handler at a real site)
_SITE: ContextVar[str] = ContextVar("fedaegis_simulated_site", default="?")
_NODE: ContextVar[int | None] = ContextVar("fedaegis_simulated_node", default=None)
WORK_EVENT_S = 1.0  # at most one work event per task a second: the display refreshes twice a second


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info and record.exc_info[0] is not None:
            last = traceback.format_exception_only(record.exc_info[0], record.exc_info[1])[-1].strip()
            text = f"{text}: {last}"
        return f"{LOG_PREFIX}{record.levelname} site {_SITE.get()}: {' '.join(text.split())}"


def simulated_sites_log() -> Path:
    """The log file every simulated site of this machine writes to."""
    return fedaegis_home() / "logs" / "simulated-sites.log"


class _Named(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{self.formatTime(record)} {record.levelname} site {_SITE.get()}: {super().format(record)}"


def relay_simulated_site_log(node_config: Mapping[str, object], node_id: int | None = None) -> None:
    """Name the simulated site handling this message and, once per process, route its log.

    ``node_id`` (the Flower node the server addresses) names the site in its work events.
    """
    if not is_simulated(node_config):
        _NODE.set(None)  # a real site's progress stays in its own log, whatever ran before in this process
        return
    _SITE.set(str(node_config.get("partition-id")))
    _NODE.set(node_id)
    if not work_log.handlers and os.environ.get(PROGRESS_ENV):  # only where a live display shows them
        events = logging.StreamHandler()
        events.setFormatter(logging.Formatter(f"{LOG_PREFIX}{EVENT_LEVEL} %(message)s"))
        work_log.addHandler(events)
        work_log.setLevel(logging.INFO)
        work_log.propagate = False
    if not any(isinstance(h.formatter, _OneLine) for h in log.handlers):
        console = logging.StreamHandler()
        console.setFormatter(_OneLine())
        console.setLevel(logging.ERROR)
        path = simulated_sites_log()
        path.parent.mkdir(parents=True, exist_ok=True)
        file = logging.FileHandler(path, encoding="utf-8")  # appends: every site process shares it
        file.setFormatter(_Named())
        log.handlers = [console, file]
        log.setLevel(logging.INFO)


def progress(task: str, every_s: float = 15.0) -> Callable[[int, int, str], None]:
    """A ``progress(done, total, unit)`` callback that logs ``task``'s progress to the site's own log.

    For the hospital's staff watching their SuperNode (or, in a simulation, the simulated sites'
    log file): how far training or an attack evaluation is, the time spent and an estimate of
    the time left. At most one line per ``every_s`` seconds, and one when it is done. It goes to
    the site's log (and, for a simulated site under the live display, to it as ``work`` events,
    at most one per :data:`WORK_EVENT_S`): nothing of it is in any reply.
    """
    start = time.monotonic()
    last, last_event = [start], [start - WORK_EVENT_S]

    def report(done: int, total: int, unit: str) -> None:
        now = time.monotonic()
        node = _NODE.get()
        if work_log.handlers and node is not None and (done >= total or now - last_event[0] >= WORK_EVENT_S):
            last_event[0] = now
            work_log.info("%s", json.dumps({"event": "work", "t": round(time.time(), 3), "site": node, "task": task,
                                            "done": done, "total": total, "unit": unit}, separators=(",", ":")))
        if done < total and now - last[0] < every_s:
            return
        last[0] = now
        spent = now - start
        left = spent / done * (total - done) if done else float("nan")
        log.info("%s: %d of %d (%s), %.0f s%s", task, done, total, unit, spent,
                 f", about {left:.0f} s left" if done < total else ", done")

    return report
