"""Choose the server's aggregation strategy by name from the run config."""

from __future__ import annotations

from flwr.serverapp.strategy import FedAvg, Strategy

from ..shared.config import RunConfig
from .aggregation import sum_metric_records


def build_strategy(cfg: RunConfig) -> Strategy:
    """FedAvg with exact count/sum metric aggregation (robust rules are added by name)."""
    return FedAvg(
        fraction_train=cfg.fraction_train,
        fraction_evaluate=cfg.fraction_evaluate,
        min_train_nodes=cfg.min_sites,
        min_evaluate_nodes=cfg.min_sites,
        min_available_nodes=cfg.min_sites,
        train_metrics_aggr_fn=sum_metric_records,
        evaluate_metrics_aggr_fn=sum_metric_records,
    )
