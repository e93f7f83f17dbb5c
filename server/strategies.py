"""Choose the server's aggregation strategy by name from the run config.

Robust rules (Krum, Multi-Krum, Bulyan, coordinate-wise median, trimmed mean) are
Flower's own message-API strategies; update-norm bounding (optionally with Gaussian
noise, i.e. central DP) is Flower's server-side fixed-clipping wrapper around any of
them. Every rule keeps the exact count/sum metric aggregation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    Bulyan,
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
    FedMedian,
    FedTrimmedAvg,
    Krum,
    MultiKrum,
    Strategy,
)

from ..shared.run.config import RunConfig
from .aggregation import sum_metric_records

from ..shared.run.aggregations import AGGREGATIONS  # noqa: F401 - the rules built below, named once


class NormBounding(DifferentialPrivacyServerSideFixedClipping):
    """Flower's server-side fixed clipping, with the noise scaled to the sites actually sampled.

    Each update w - w_global is clipped to ``clipping_norm`` before the inner rule
    aggregates; noise of std noise_multiplier * clipping_norm / n is added to the result
    (none for noise_multiplier = 0: pure norm bounding against boosted updates).
    """

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(super().configure_train(server_round, arrays, config, grid))
        self.num_sampled_clients = max(1, len(messages))
        return messages


def _setting(cfg: RunConfig, name: str, default: Any) -> Any:
    """A run-config field that may not exist yet (older configs): its default then."""
    return getattr(cfg, name, default)


def check_aggregation(cfg: RunConfig) -> None:
    """Reject settings the chosen rule cannot honour, naming the run-config key.

    The checks live with the run config (``AggregationSection`` in shared/run/config.py), which
    runs them whenever a :class:`RunConfig` is built; anything else passed here is built into one.
    """
    if not isinstance(cfg, RunConfig):
        RunConfig(**{f.name: getattr(cfg, f.name) for f in fields(RunConfig) if hasattr(cfg, f.name)})


def build_strategy(cfg: RunConfig) -> Strategy:
    """The aggregation rule ``aggregation`` (default FedAvg), norm-bounded if ``clip-norm`` > 0."""
    check_aggregation(cfg)
    rule = str(_setting(cfg, "aggregation", "fedavg")).lower()
    f = int(_setting(cfg, "num_malicious", 0))
    common: dict[str, Any] = dict(
        fraction_train=cfg.fraction_train,
        fraction_evaluate=cfg.fraction_evaluate,
        min_train_nodes=cfg.min_sites,
        min_evaluate_nodes=cfg.min_sites,
        min_available_nodes=cfg.min_sites,
        train_metrics_aggr_fn=sum_metric_records,
        evaluate_metrics_aggr_fn=sum_metric_records,
    )
    strategy: Strategy
    if rule == "krum":
        strategy = Krum(num_malicious_nodes=f, **common)
    elif rule == "multikrum":
        select = int(_setting(cfg, "krum_select", 0)) or max(1, cfg.min_sites - f)
        strategy = MultiKrum(num_malicious_nodes=f, num_nodes_to_select=select, **common)
    elif rule == "bulyan":
        strategy = Bulyan(num_malicious_nodes=f, **common)
    elif rule == "fedmedian":
        strategy = FedMedian(**common)
    elif rule == "fedtrimmedavg":
        strategy = FedTrimmedAvg(beta=float(_setting(cfg, "trim_beta", 0.2)), **common)
    else:
        strategy = FedAvg(**common)
    clip = float(_setting(cfg, "clip_norm", 0.0))
    if clip > 0:
        noise = float(_setting(cfg, "noise_multiplier", 0.0))
        strategy = NormBounding(strategy, noise_multiplier=noise, clipping_norm=clip, num_sampled_clients=cfg.min_sites)
    return strategy
