"""The fedaegis ClientApp, run at each hospital: trains and evaluates on local data only.

The run config in each message is a request: :func:`~fedaegis.client.mods.site_guard`
checks it against the site's own policy before any data is touched. Replies carry the
updated model (train) and counts and sums over the site's data;
:func:`~fedaegis.client.mods.protocol_guard` refuses anything the request did not ask for.
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from ..shared.config import RunConfig
from ..shared.tasks import build_task_model, model_meta
from ..shared.protocol import ARRAYS_KEY, METRICS_KEY
from .mods import ROUND_KEY, cell_suppression, metric_dp, protocol_guard, request_config, site_guard
from .secure_aggregation import answer_query, secure_aggregation
from .robustness import evaluate_robustness
from .site import evaluation_subset, site_data, site_seed
from .training import evaluate_local
from .classification_round import backdoor_metrics, train_classifier_round

__all__ = ["ROUND_KEY", "app"]


def _setup(msg: Message, context: Context) -> tuple[RunConfig, torch.nn.Module, int]:
    cfg, server_round = request_config(msg)
    model = build_task_model(model_meta(cfg))
    model.load_state_dict(msg.content[ARRAYS_KEY].to_torch_state_dict())
    return cfg, model, server_round


def _seed(cfg: RunConfig, server_round: int, context: Context) -> int:
    return cfg.seed * 100_003 + server_round * 1_009 + int(context.node_config.get("partition-id", 0))


# Outermost first: the site's policy decides before anything runs and keeps errors at the
# site; the guard checks the reply exactly as sent (masked, if secure aggregation is on),
# after DP noise on counts that suppression has screened.
app = ClientApp(mods=[site_guard, protocol_guard, secure_aggregation, metric_dp, cell_suppression])

# The same config and seed give the same figures: torch's deterministic kernels where it has them
# (warn_only: an op without one runs as before rather than failing the site).
torch.use_deterministic_algorithms(True, warn_only=True)


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
    # on the site's own fixed set of a policy size, never one the server picks; in the rounds the
    # request's attack-rounds names (default: the final one only)
    if cfg.attack_names and cfg.attacks_in_round(server_round):
        metrics.update(evaluate_robustness(model, evaluation_subset(data.test, cfg.attack_samples, cfg,
                                                                    context.node_config), cfg, seed))
    metrics.update(backdoor_metrics(model, cfg, data.test))
    if cfg.defence_models:
        from .defence_comparison import evaluate_defences

        metrics.update(evaluate_defences(model, cfg, data.train, data.test, seed, node_config=context.node_config))
    metrics["skipped"] = data.skipped
    return _reply(msg, metrics)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Secure-aggregation key exchange and dropout unmasking (no data involved)."""
    return answer_query(msg, context)


def simulated_site_app(policy: str, inner: ClientApp | None = None) -> ClientApp:
    """The ClientApp of simulated sites that all run under the policy file ``policy``.

    A simulated site's node config holds only its partition; this puts ``policy`` beside
    it, as a hospital's SuperNode does with ``--node-config "policy='...'"``.
    """
    site = inner or app
    wrapper = ClientApp()

    def handle(msg: Message, context: Context) -> Message:
        context.node_config["policy"] = policy
        return site(msg, context)

    wrapper.train()(handle)
    wrapper.evaluate()(handle)
    wrapper.query()(handle)
    return wrapper
