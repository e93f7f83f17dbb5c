"""The server's aggregation rules by name, and how many sites each needs against f attackers.

Shared code (the run config's checks) must not import the server, whose factory
(:func:`fedaegis.server.strategies.build_strategy`) builds these rules from Flower's strategies;
both read the names and requirements from here, so a rule is declared once.
"""

from __future__ import annotations

AGGREGATIONS: tuple[str, ...] = ("fedavg", "krum", "multikrum", "bulyan", "fedmedian", "fedtrimmedavg")

# rule -> (a, b): the rule tolerates num-malicious f only with min-sites >= a * f + b
MIN_SITES: dict[str, tuple[int, int]] = {"krum": (2, 3), "multikrum": (2, 3), "bulyan": (4, 3)}


def min_sites(rule: str, num_malicious: int) -> int:
    """The fewest sites ``rule`` needs to tolerate ``num_malicious`` attackers (1 for non-robust rules)."""
    a, b = MIN_SITES.get(rule, (0, 1))
    return a * num_malicious + b
