"""The fedaegis ServerApp: FedAvg rounds, federated evaluation, and every round stored."""

from __future__ import annotations

import logging
import math
import os
import re
import uuid as uuidlib
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

from ..shared.models.checkpoint import save_checkpoint
from ..shared.run.paths import under
from ..shared.run.config import SERVER_ONLY_KEYS, ConfigError, RunConfig, fedaegis_home
from ..shared.models.tasks import build_task_model, model_meta
from ..shared.results import RoundTotals, round_rows
from ..shared.store import RoundRecord, RunStore
from ..shared.store.repository import checkpoint_dir
from .aggregation import derived_ratios, withheld_examples
from .recording import RecordingStrategy, RoundOutcome
from .resume import file_sha256, pending_path, resume_point
from .secure_evaluation import SecureAggregation
from .strategies import build_strategy

log = logging.getLogger("fedaegis")
# The last line of a run the ServerApp stored as completed or failed: a launcher may stop following there
RUN_COMPLETED = "stored as completed: run"
RUN_FAILED = "stored as failed: run"


def client_config(cfg: RunConfig) -> ConfigRecord:
    """The part of the run config that sites need, sent with every request."""
    return ConfigRecord({k: v for k, v in cfg.to_flower().items() if k not in SERVER_ONLY_KEYS})


class RunRecorder:
    """Writes one round per transaction and keeps the latest global model on disk."""

    def __init__(self, store: RunStore, run_id: int, run_uuid: str, cfg: RunConfig) -> None:
        self.store, self.run_id, self.cfg = store, run_id, cfg
        self.checkpoint = under(checkpoint_dir(fedaegis_home()), f"{run_uuid}.pt")
        self.site_errors: Counter[str] = Counter()  # distinct site errors of the run, with their counts
        self.trained = self.evaluated = 0  # rounds in which at least one site trained / evaluated

    def failure(self) -> str:
        """Why the run must be stored as failed ("" when it did its job), with its site errors."""
        why = ("no site trained in any round" if not self.trained else
               "no round was evaluated by any site" if not self.evaluated else "")
        if why and self.site_errors:
            why += "; site errors: " + "; ".join(f"{n}x {e}" for e, n in self.site_errors.most_common())
        return why

    def __call__(self, outcome: RoundOutcome) -> None:
        self.trained += outcome.train_replies > 0
        self.evaluated += outcome.evaluate_replies > 0
        for error in outcome.errors:
            self.site_errors[site_error(error)] += 1
        record = RoundRecord(
            number=outcome.number,
            started_at=outcome.started_at,
            train_replies=outcome.train_replies,
            evaluate_replies=outcome.evaluate_replies,
            failures=outcome.failures,
        )
        record.metrics, record.site_metrics = round_rows(RoundTotals(  # every metric family's rows
            self.cfg, outcome.train_metrics, outcome.evaluate_metrics, outcome.train_replies,  # type: ignore[arg-type]
            site_train={n: {**v, **derived_ratios(v, withheld_examples(v))} for n, v in outcome.site_train.items()},
            site_evaluate={n: {**v, **derived_ratios(v, withheld_examples(v))} for n, v in outcome.site_evaluate.items()},
            refusals=outcome.refusals))
        # crash-safe (see server/resume.py): the model waits beside the checkpoint until its
        # round and hash are committed together, then replaces it
        pending = pending_path(self.checkpoint)
        save_checkpoint(pending, outcome.arrays.to_torch_state_dict(), {**model_meta(self.cfg), "round": outcome.number})
        self.store.record_round(self.run_id, record, checkpoint=(self.checkpoint, file_sha256(pending)))
        os.replace(pending, self.checkpoint)
        ev = outcome.evaluate_metrics or {}
        for node, phase, policy_field in outcome.refusals:
            log.warning("round %d: site %s refused the %s request (its policy: %s)", outcome.number, node, phase,
                        policy_field)
        if ev.get("suppressed-count"):  # small sites: min-cell-size zeroes their counts (client/mods.py)
            log.warning(
                "round %d: %d of %d sites withheld their evaluation (fewer than min-cell-size = %d test samples); "
                "the aggregate covers the other sites only%s", outcome.number, int(ev["suppressed-count"]),
                outcome.evaluate_replies, self.cfg.min_cell_size,
                "" if ev.get("num-examples") else ", i.e. none: use fewer sites or a smaller min-cell-size",
            )
        def shown(name: str) -> str:  # a value the sites withheld (an unbounded sum under metric DP) is no number
            value = ev.get(name)
            return "withheld" if value is None or math.isnan(value) else f"{value:.4f}"

        log.info(
            "round %d/%d: accuracy %s, loss %s over %d test samples at %d sites (%d failures)",
            outcome.number, self.cfg.num_server_rounds, shown("accuracy"), shown("loss"),
            int(ev.get("num-examples", 0)), outcome.evaluate_replies, outcome.failures,
        )


def site_error(reason: str) -> str:
    """One site's error as one line, the same for every site and round that hit it (to count them).

    Flower wraps a ClientApp's exception as ``<class ...>:<'...Message: TEXT'>``; node ids differ.
    """
    text = reason.split("Message: ")[-1] if "Message: " in reason else reason
    text = re.sub(r"^node \d+: ", "", text.strip())
    text = re.sub(r"\[[\d, ]+\]", "[...]", text)  # ids of silent nodes
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "unknown error")
    return line.removesuffix("'>")[:300]


class RunFailed(RuntimeError):
    """The federation ran but did not do its job (no site trained, or no round evaluated)."""


def run_federation(grid: Grid, cfg: RunConfig, flwr_run_id: int | str = "") -> int:
    """Run ``cfg.num_server_rounds`` of FedAvg with federated evaluation; returns the run id."""
    store = RunStore(cfg.resolved_db_url)
    resumed = resume_point(store, cfg.resume_run, cfg.db_url) if cfg.resume_run else None
    cfg = resumed.cfg if resumed else cfg
    done = resumed.done if resumed else 0
    run_uuid = cfg.run_uuid or uuidlib.uuid4().hex
    run_id = resumed.run_id if resumed else store.create_run(
        uuid=run_uuid,
        name=cfg.run_name,
        config={k: v for k, v in cfg.to_flower().items() if k != "db-url"},
        num_rounds=cfg.num_server_rounds,
        flwr_run_id=str(flwr_run_id),
    )
    log.info("fedaegis run %d (%s) stored in %s", run_id, run_uuid, store.engine.url.render_as_string(hide_password=True))
    torch.manual_seed(cfg.seed)  # the initial global model is part of what a seed reproduces
    model = build_task_model(model_meta(cfg))
    if cfg.weights:  # the first global model starts from the user's weights (checked in preflight)
        from ..shared.models.custom import load_weights

        load_weights(model, cfg.weights)
    strategy = build_strategy(cfg)
    if cfg.secure_aggregation or cfg.secure_aggregation_train:
        strategy = SecureAggregation(strategy, train=cfg.secure_aggregation_train, evaluate=cfg.secure_aggregation,
                                     neighbours=cfg.secure_aggregation_neighbours, timeout=cfg.round_timeout)
    recorder = RunRecorder(store, run_id, run_uuid, cfg)
    try:
        RecordingStrategy(strategy, recorder, first_round=done + 1).start(
            grid=grid,
            initial_arrays=resumed.arrays if resumed and resumed.arrays is not None else ArrayRecord(model.state_dict()),
            num_rounds=cfg.num_server_rounds - done,
            timeout=cfg.round_timeout,
            train_config=client_config(cfg),
            evaluate_config=client_config(cfg),
        )
    except KeyboardInterrupt:
        store.finish_run(run_id, status="interrupted", error="interrupted (Ctrl-C); resume it with --resume")
        raise
    except BaseException as exc:
        store.finish_run(run_id, status="failed", error=f"{type(exc).__name__}: {exc}")
        log.error("%s %s", RUN_FAILED, run_uuid)
        raise
    for error, count in recorder.site_errors.most_common():
        log.error("%d site replies failed with: %s", count, error)
    failure = recorder.failure()
    if failure:
        store.finish_run(run_id, status="failed", error=failure)
        log.error("%s %s", RUN_FAILED, run_uuid)
        raise RunFailed(f"run {run_id} failed: {failure}")
    store.finish_run(run_id, status="completed")
    log.info("%s %s", RUN_COMPLETED, run_uuid)
    return run_id


def refuse_shared_credentials(run_config: Mapping[str, Any]) -> None:
    """Flower sends the run config to every site: a database password in it is refused."""
    from sqlalchemy.engine import make_url

    url = str(run_config.get("db-url", ""))
    if url and make_url(url).password:
        raise ConfigError("run config 'db-url' holds a password, and Flower sends the run config to every "
                          "site; give the ServerApp $FEDAEGIS_DB_URL in its environment instead")


from ..shared.reply.protocol import LOG_PREFIX  # noqa: E402 - re-exported: how fedaegis' lines start in Flower's log stream


def log_to_flower() -> None:
    """Send fedaegis' log lines to the process's stderr, which Flower streams to ``flwr run``/``flwr log``.

    Left alone where a caller already configured the logger (an in-process ServerApp).
    """
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(LOG_PREFIX + "%(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def with_data_shape(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with in-channels, spatial-dims, image-size and num-classes read from its dataset.

    Under ``flwr run`` the run config holds the defaults (PneumoniaMNIST's shape) unless the user
    states them: where the classification dataset is readable from the server, each key still at
    its default takes the dataset's value (logged); stated values are kept. A dataset the server
    cannot read (a real consortium's, at the sites only) keeps the run config's values.
    """
    if config.get("task", "classification") != "classification" or not config.get("dataset"):
        return config
    from ..shared.run.preflight import dataset_facts

    try:
        shape = dataset_facts(str(config["dataset"])).run_config()
    except Exception as exc:  # noqa: BLE001 - the sites hold the data; the config says its shape
        log.info("dataset %s is not readable here (%s): using the run config's shape", config["dataset"], exc)
        return config
    defaults = RunConfig().to_flower()
    filled = {k: v for k, v in shape.items() if config.get(k, defaults[k]) == defaults[k] and v != defaults[k]}
    if filled:
        log.info("from %s: %s", config["dataset"], ", ".join(f"{k} = {v}" for k, v in filled.items()))
    return {**config, **filled}


def make_server_app(
    overrides: dict[str, Any] | None = None, wrap_grid: Callable[[Grid], Grid] | None = None
) -> ServerApp:
    """A ServerApp whose run config is Flower's, updated with ``overrides`` (used by the CLI).

    ``wrap_grid`` lets an audit see every message, e.g. with
    :class:`~fedaegis.server.audit.AuditingGrid`.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        from ..shared.run.preflight import check_config, preflight

        from .progress import PROGRESS_ENV, log_events, progress_grid

        log_to_flower()
        if os.environ.get(PROGRESS_ENV):
            log_events(LOG_PREFIX)
            grid = progress_grid(grid)  # under any wrapper: it sees each reply as it arrives
        refuse_shared_credentials(dict(context.run_config))
        cfg = check_config(with_data_shape({**dict(context.run_config), **(overrides or {})}))
        if not cfg.resume_run:  # a resumed run is checked against its stored config (server/resume.py)
            preflight(cfg, None)  # the sites' data is theirs: the server checks config, model and database
        run_federation(wrap_grid(grid) if wrap_grid else grid, cfg, flwr_run_id=context.run_id)

    return app


app = make_server_app()
