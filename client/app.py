"""The fedaegis ClientApp, run at each hospital: trains and evaluates on local data only.

The run config in each message is a request: :func:`~fedaegis.client.mods.site_guard`
checks it against the site's own policy before any data is touched. Replies carry the
updated model (train) and counts and sums over the site's data;
:func:`~fedaegis.client.mods.protocol_guard` refuses anything the request did not ask for.
"""

from __future__ import annotations

import logging
from functools import partial

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from ..shared.run.config import RunConfig
from ..shared.models.tasks import build_task_model, model_meta
from ..shared.reply.protocol import ARRAYS_KEY, METRICS_KEY
from ..shared.site.policy import site_policy
from .mods import (
    ROUND_KEY,
    LedgerSource,
    cell_suppression,
    metric_dp,
    protocol_guard,
    request_config,
    site_guard,
)
from .secure_aggregation import answer_query, secure_aggregation
from .robustness import evaluate_landscape, evaluate_robustness
from ..shared.training import data_to, evaluate_local, to_cpu
from .site import evaluation_subset, site_data, site_device, site_seed, state_dir
from .classification_round import backdoor_metrics, train_classifier_round
from .transfer import evaluate_transfer, keep_sent_model, wanted as transfer_wanted

__all__ = ["ROUND_KEY", "app", "build_client_app"]

log = logging.getLogger("fedaegis.site")  # the site's own log: stays at the site


def _setup(msg: Message, context: Context) -> tuple[RunConfig, torch.nn.Module, int, torch.device]:
    """The request, the global model on the site's own device (node config ``device``), the round."""
    cfg, server_round = request_config(msg)
    device = site_device(cfg, context.node_config)
    model = build_task_model(model_meta(cfg))
    model.load_state_dict(msg.content[ARRAYS_KEY].to_torch_state_dict())
    return cfg, model.to(device), server_round, device


def _seed(cfg: RunConfig, server_round: int, context: Context) -> int:
    return cfg.seed * 100_003 + server_round * 1_009 + int(context.node_config.get("partition-id", 0))


# The same config and seed give the same figures: torch's deterministic kernels where it has them
# (warn_only: an op without one runs as before rather than failing the site). The flag is set
# directly: torch.use_deterministic_algorithms also imports torch._inductor, only to pass the
# flag on to torch.compile, which no site uses; that import doubled each site process's start
# (seconds in every Ray actor and SuperNode).
torch._C._set_deterministic_algorithms(True, warn_only=True)


def train(msg: Message, context: Context) -> Message:
    cfg, model, server_round, device = _setup(msg, context)
    seed = _seed(cfg, server_round, context)
    torch.manual_seed(seed)
    if cfg.task == "segmentation":
        from .segmentation_site import train_segmentation  # MONAI-heavy: only where needed

        metrics = train_segmentation(model, cfg, context.node_config, seed, device)
        return _reply(msg, metrics, model)
    data = site_data(cfg, context.node_config)
    state, metrics = train_classifier_round(model, cfg, data.train, context.node_config, seed, server_round, device)
    model.load_state_dict(state)
    keep_sent_model(context, cfg, server_round, to_cpu(model.state_dict()))  # transfer's surrogate, kept here
    metrics["skipped"] = data.skipped
    return _reply(msg, metrics, model)


def _reply(msg: Message, metrics: dict, model: torch.nn.Module | None = None) -> Message:
    content = RecordDict({METRICS_KEY: MetricRecord(metrics)})
    if model is not None:
        content[ARRAYS_KEY] = ArrayRecord(to_cpu(model.state_dict()))  # nothing on the wire depends on the device
    return Message(content=content, reply_to=msg)


def evaluate(msg: Message, context: Context) -> Message:
    cfg, model, server_round, device = _setup(msg, context)
    seed = _seed(cfg, server_round, context)
    if cfg.task == "segmentation":
        from .segmentation_site import evaluate_segmentation_site

        return _reply(msg, evaluate_segmentation_site(model, cfg, context.node_config, seed, device))
    data = site_data(cfg, context.node_config)
    metrics = evaluate_local(model, data.test)
    # on the site's own fixed set of a policy size, never one the server picks; in the rounds the
    # request's attack-rounds names (default: the final one only)
    if (cfg.attack_names or cfg.transfer or cfg.landscape) and cfg.attacks_in_round(server_round):
        subset = data_to(evaluation_subset(data.test, cfg.attack_samples, cfg, context.node_config), device)
        metrics.update(evaluate_robustness(model, subset, cfg, seed))
        if transfer_wanted(cfg, server_round):
            metrics.update(evaluate_transfer(model, cfg, subset, context, server_round, seed))
        metrics.update(evaluate_landscape(model, subset, cfg, site_seed(cfg, context.node_config, "landscape")))
    metrics.update(backdoor_metrics(model, cfg, data_to(data.test, device)))
    if cfg.defence_models:
        from .defence_comparison import evaluate_defences

        metrics.update(evaluate_defences(model, cfg, data_to(data.train, device), data_to(data.test, device), seed,
                                         node_config=context.node_config))
    metrics["skipped"] = data.skipped
    if server_round == cfg.num_server_rounds and site_policy(context.node_config).site_visual_report:
        _visual_report(model, cfg, data, context, seed)
    return _reply(msg, metrics)


def _visual_report(model: torch.nn.Module, cfg: RunConfig, data, context: Context, seed: int) -> None:
    """The site's own visual report (its policy asked for it), after the reply's figures; never sent."""
    from .visual_report import report_dir, write_site_report

    out = report_dir(state_dir(site_policy(context.node_config), context.node_config), context.run_id)
    try:
        path = write_site_report(model.cpu(), cfg, data.train, data.test, out, seed)  # a small page: CPU
        log.info("visual report written to %s", path)
    except Exception:  # noqa: BLE001 - the site's own convenience: its failure is logged here, the reply stands
        log.exception("visual report not written")


def query(msg: Message, context: Context) -> Message:
    """Secure-aggregation key exchange and dropout unmasking (no data involved)."""
    return answer_query(msg, context)


def build_client_app(*, ledger: LedgerSource | None = None) -> ClientApp:
    """fedaegis' ClientApp, each mod given its settings here, as Flower's mods take theirs when built.

    ``ledger``: where the site's releases are charged, one ledger for the guard that checks the
    lifetime budget and the DP mod that charges it (default: the policy's state-dir, per node).
    What the mods read from a message is the request, checked against the site's own policy.
    """
    settings = {"ledger": ledger} if ledger is not None else {}
    # Outermost first: the site's policy decides before anything runs and keeps errors at the
    # site; the guard checks the reply exactly as sent (masked, if secure aggregation is on),
    # after DP noise on counts that suppression has screened.
    client = ClientApp(mods=[partial(site_guard, **settings), protocol_guard, secure_aggregation,
                             partial(metric_dp, **settings), cell_suppression])
    client.train()(train)
    client.evaluate()(evaluate)
    client.query()(query)
    return client


app = build_client_app()


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
