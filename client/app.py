"""The fedaegis ClientApp, run at each hospital: trains and evaluates on local data only.

Replies carry the updated model (train) and counts and sums over the site's data;
:func:`~fedaegis.client.mods.protocol_guard` refuses any other reply.
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from ..shared.config import RunConfig
from ..shared.tasks import build_task_model, model_meta
from ..shared.protocol import ARRAYS_KEY, METRICS_KEY
from .mods import cell_suppression, metric_dp, protocol_guard
from .secure_aggregation import answer_query, secure_aggregation
from .robustness import evaluate_robustness
from .site import site_data
from .training import evaluate_local
from .classification_round import backdoor_metrics, train_classifier_round

ROUND_KEY = "server-round"


def _setup(msg: Message, context: Context) -> tuple[RunConfig, torch.nn.Module, int]:
    config = dict(msg.content["config"])
    server_round = int(config.pop(ROUND_KEY, 0))  # type: ignore[arg-type]
    # secagg-* entries steer the secure_aggregation mod, not the run
    cfg = RunConfig.from_flower({k: v for k, v in config.items() if not k.startswith("secagg-")})
    model = build_task_model(model_meta(cfg))
    model.load_state_dict(msg.content[ARRAYS_KEY].to_torch_state_dict())
    return cfg, model, server_round


def _seed(cfg: RunConfig, server_round: int, context: Context) -> int:
    return cfg.seed * 100_003 + server_round * 1_009 + int(context.node_config.get("partition-id", 0))


# Outermost first: the guard checks the reply exactly as sent (masked, if secure
# aggregation is on), after DP noise on counts that suppression has screened.
app = ClientApp(mods=[protocol_guard, secure_aggregation, metric_dp, cell_suppression])


@app.train()
def train(msg: Message, context: Context) -> Message:
    cfg, model, server_round = _setup(msg, context)
    seed = _seed(cfg, server_round, context)
    torch.manual_seed(seed)
    if cfg.task == "segmentation":
        from .segmentation_site import train_segmentation  # MONAI-heavy: only where needed

        metrics = train_segmentation(model, cfg, context.node_config, seed)
        return _reply(msg, metrics, model)
    data = site_data(cfg, context.node_config)
    state, metrics = train_classifier_round(model, cfg, data.train, context.node_config, seed, server_round)
    model.load_state_dict(state)
    metrics["skipped"] = data.skipped
    return _reply(msg, metrics, model)


def _reply(msg: Message, metrics: dict, model: torch.nn.Module | None = None) -> Message:
    content = RecordDict({METRICS_KEY: MetricRecord(metrics)})
    if model is not None:
        content[ARRAYS_KEY] = ArrayRecord(model.state_dict())
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    cfg, model, server_round = _setup(msg, context)
    seed = _seed(cfg, server_round, context)
    if cfg.task == "segmentation":
        from .segmentation_site import evaluate_segmentation_site

        return _reply(msg, evaluate_segmentation_site(model, cfg, context.node_config, seed))
    data = site_data(cfg, context.node_config)
    metrics = evaluate_local(model, data.test)
    metrics.update(evaluate_robustness(model, data.test, cfg, seed))
    metrics.update(backdoor_metrics(model, cfg, data.test))
    if cfg.defence_models:
        from .defence_comparison import evaluate_defences

        metrics.update(evaluate_defences(model, cfg, data.train, data.test, seed))
    metrics["skipped"] = data.skipped
    return _reply(msg, metrics)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Secure-aggregation key exchange and dropout unmasking (no data involved)."""
    return answer_query(msg, context)
