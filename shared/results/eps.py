"""The one way an epsilon is written: into metric names (``eps_name``) and for people (``eps_display``).

A leaf module (no imports), so the attack library, the detectors and the hardening evaluation can
name their cells without importing the result families that read them.
"""

from __future__ import annotations


def eps_name(eps: float) -> str:
    """The one way an epsilon is written into a metric name (``eps=<this>``)."""
    return f"{float(eps):.6g}"


def eps_display(eps: float | None, none: str = "-") -> str:
    """An L-inf budget for people (images in [0, 1]): ``8/255``."""
    return none if eps is None else f"{eps * 255:.3g}/255"
