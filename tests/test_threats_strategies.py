"""Robust aggregation: Flower's strategies, chosen by run config, against a boosted poisoned update.

Seven sites send real SmallCNN updates trained on PneumoniaMNIST; one of them trained on
flipped labels and boosted its update for model replacement. FedAvg is dragged to the
attacker; Krum, Multi-Krum, Bulyan, median, trimmed mean and norm bounding are not.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import time
from types import SimpleNamespace

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, Metadata, MetricRecord, RecordDict
from flwr.serverapp.strategy import Bulyan, FedAvg, FedMedian, FedTrimmedAvg, Krum, MultiKrum
from flwr.supercore.task_identity import TaskIdentity

from fedaegis.shared.training import train_classifier
from fedaegis.server.aggregation import sum_metric_records
from fedaegis.server.strategies import NormBounding, build_strategy
from fedaegis.shared.run.config import ConfigError, RunConfig
from fedaegis.shared.data import ImageSet
from fedaegis.shared.models import SmallCNN
from fedaegis.shared.reply.protocol import ARRAYS_KEY, METRICS_KEY
from fedaegis.shared.threats import boost_update, flip_labels, replacement_boost
from privacy_fixtures import medmnist, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")
SITES, PER_SITE = 7, 64


def cfg(**fields):
    """A RunConfig plus the fields this issue adds (read by build_strategy with getattr)."""
    return SimpleNamespace(**{**dataclasses.asdict(RunConfig(min_sites=SITES)), **fields})


@functools.cache
def updates() -> tuple[dict, list[dict], dict]:
    """Global weights, six honest site models and one boosted label-flipping model."""
    data = medmnist("pneumoniamnist", "train")
    torch.manual_seed(0)
    global_model = SmallCNN(1, 2, 2, "group", width=8)
    global_state = {k: v.clone() for k, v in global_model.state_dict().items()}
    honest = []
    for site in range(SITES):
        sl = slice(site * PER_SITE, (site + 1) * PER_SITE)
        labels = data.labels[sl]
        if site == SITES - 1:
            labels = flip_labels(labels, 2)
        model = copy.deepcopy(global_model)
        train_classifier(model, ImageSet(data.images[sl], labels, 2, "site"), epochs=1, batch_size=16, lr=1e-3, seed=site)
        honest.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    malicious = boost_update(global_state, honest.pop(), replacement_boost(SITES, 1))
    return global_state, honest, malicious


def reply(state: dict, node: int) -> Message:
    content = RecordDict({
        ARRAYS_KEY: ArrayRecord(state),
        METRICS_KEY: MetricRecord({"num-examples": PER_SITE, "train-correct": node, "train-loss-sum": 1.0}),
    })
    meta = Metadata(run_id=1, message_id=f"m{node}", src_node_id=node, dst_node_id=0, reply_to_message_id="",
                    group_id="1", created_at=time.time(), ttl=3600.0, message_type="train")
    return Message(content=content, metadata=meta)


def flat(state) -> torch.Tensor:
    return torch.cat([torch.as_tensor(v).float().flatten() for v in state.values()])


def aggregate(strategy, attacker: dict | None = None) -> tuple[torch.Tensor, MetricRecord]:
    """Aggregate the six honest updates and the attacker's (the boosted one by default)."""
    global_state, honest, malicious = updates()
    replies = [reply(s, i + 1) for i, s in enumerate([*honest, attacker or malicious])]
    arrays, metrics = strategy.aggregate_train(1, replies)
    return flat(arrays.to_torch_state_dict()), metrics


def pull(agg: torch.Tensor) -> float:
    """How far the aggregate moved from the honest mean towards the attacker's model."""
    _, honest, malicious = updates()
    honest_mean = torch.stack([flat(s) for s in honest]).mean(0)
    direction = flat(malicious) - honest_mean
    return float((agg - honest_mean) @ direction / direction.norm())


def fedavg_pull() -> float:
    return pull(aggregate(build_strategy(cfg()))[0])


def test_default_is_fedavg_with_count_metrics_and_is_poisoned():
    strategy = build_strategy(RunConfig(min_sites=SITES))
    assert type(strategy) is FedAvg
    assert strategy.train_metrics_aggr_fn is sum_metric_records
    assert strategy.evaluate_metrics_aggr_fn is sum_metric_records
    agg, metrics = aggregate(strategy)
    _, honest, malicious = updates()
    attacker = float((flat(malicious) - torch.stack([flat(s) for s in honest]).mean(0)).norm())
    assert pull(agg) > 0.1 * attacker  # one boosted update in seven moves FedAvg 1/7 of the way
    assert metrics["num-examples"] == SITES * PER_SITE and metrics["train-correct"] == sum(range(1, SITES + 1))


@pytest.mark.parametrize(
    ("rule", "kind"),
    [("krum", Krum), ("multikrum", MultiKrum), ("bulyan", Bulyan), ("fedmedian", FedMedian), ("fedtrimmedavg", FedTrimmedAvg)],
)
def test_robust_rules_reject_the_boosted_update(rule, kind):
    strategy = build_strategy(cfg(aggregation=rule, num_malicious=1))
    assert type(strategy) is kind
    assert (strategy.min_train_nodes, strategy.min_available_nodes, strategy.fraction_train) == (SITES, SITES, 1.0)
    assert strategy.train_metrics_aggr_fn is sum_metric_records
    agg, metrics = aggregate(strategy)
    assert abs(pull(agg)) < 0.1 * fedavg_pull(), (rule, pull(agg), fedavg_pull())
    assert metrics["num-examples"] >= PER_SITE


def test_krum_selects_an_honest_update():
    agg, metrics = aggregate(build_strategy(cfg(aggregation="krum", num_malicious=1)))
    _, honest, _ = updates()
    assert any(torch.allclose(agg, flat(s)) for s in honest)
    assert metrics["num-examples"] == PER_SITE  # Flower sums the metrics of the selected site only


def test_multikrum_selects_min_sites_minus_malicious_by_default():
    assert build_strategy(cfg(aggregation="multikrum", num_malicious=2)).num_nodes_to_select == SITES - 2
    assert build_strategy(cfg(aggregation="multikrum", num_malicious=1, krum_select=3)).num_nodes_to_select == 3


def test_norm_bounding_clips_every_update():
    global_state, _, _ = updates()
    clip = 0.2  # about the honest updates' norm; the boosted one is about 1.5
    strategy = build_strategy(cfg(clip_norm=clip))
    assert isinstance(strategy, NormBounding) and type(strategy.strategy) is FedAvg
    strategy.current_arrays = ArrayRecord(global_state)  # what configure_train records
    agg, metrics = aggregate(strategy)
    assert float((agg - flat(global_state)).norm()) <= clip + 1e-5
    # Compared with the same site sending an honest update, the attacker moves the mean <= 2 clip / n.
    without, _ = aggregate(strategy, attacker=updates()[1][0])
    assert float((agg - without).norm()) <= 2 * clip / SITES + 1e-5
    assert pull(agg) < 0.5 * fedavg_pull()
    assert metrics["num-examples"] == SITES * PER_SITE


def test_norm_bounding_with_noise_wraps_a_robust_rule_and_tracks_sampled_sites(monkeypatch):
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    global_state, _, _ = updates()
    strategy = build_strategy(cfg(aggregation="fedmedian", clip_norm=1.0, noise_multiplier=0.5))
    assert type(strategy.strategy) is FedMedian and strategy.noise_multiplier == 0.5
    grid = SimpleNamespace(get_node_ids=lambda: list(range(1, SITES + 3)))
    messages = list(strategy.configure_train(1, ArrayRecord(global_state), ConfigRecord({}), grid))
    assert len(messages) == strategy.num_sampled_clients == SITES + 2
    agg, _ = aggregate(strategy)
    assert torch.isfinite(agg).all() and not torch.allclose(agg, flat(global_state))


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"aggregation": "mean"}, "aggregation"),
        ({"aggregation": "bulyan", "num_malicious": 2}, "num-malicious"),  # needs 11 sites
        ({"aggregation": "krum", "num_malicious": 3}, "num-malicious"),  # needs 9 sites
        ({"aggregation": "fedtrimmedavg", "trim_beta": 0.5}, "trim-beta"),
        ({"noise_multiplier": 1.0}, "noise-multiplier"),  # noise without a clip
        ({"clip_norm": 1.0, "norm": "batch"}, "clip-norm"),
        ({"clip_norm": -1.0}, "clip-norm"),
    ],
)
def test_bad_settings_name_the_key(fields, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        build_strategy(cfg(**fields))
