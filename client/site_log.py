"""A simulated site's own log, shown on the console of ``fedaegis simulate``.

A real site's log (logger ``fedaegis.site``) stays on the site's machine. In a simulation every
site is a process on the user's machine, so its log is the user's own: its lines are written to
Flower's log stream with the prefix that ``fedaegis simulate`` relays (:data:`LOG_PREFIX`), one
line each (an exception as its last line), named by the simulated site's partition. Without this
a site's error reached the console only as the fixed reason the server sees ("site error").
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping
from contextvars import ContextVar

from ..shared.protocol import LOG_PREFIX
from ..shared.site_policy import is_simulated

log = logging.getLogger("fedaegis.site")
_SITE: ContextVar[str] = ContextVar("fedaegis_simulated_site", default="?")


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info and record.exc_info[0] is not None:
            last = traceback.format_exception_only(record.exc_info[0], record.exc_info[1])[-1].strip()
            text = f"{text}: {last}"
        return f"{LOG_PREFIX}{record.levelname} site {_SITE.get()}: {' '.join(text.split())}"


def relay_simulated_site_log(node_config: Mapping[str, object]) -> None:
    """Name the simulated site handling this message and, once per process, relay its log."""
    if not is_simulated(node_config):
        return
    _SITE.set(str(node_config.get("partition-id")))
    if not any(isinstance(h.formatter, _OneLine) for h in log.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(_OneLine())
        handler.setLevel(logging.WARNING)
        log.addHandler(handler)
        log.propagate = False
