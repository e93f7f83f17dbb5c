"""``--mlflow URI``: follow fedaegis runs in MLflow, the experiment tracker of this field.

The results database stays the record; MLflow gets a copy of each finished (or failed) run,
read back from it, so what the tracker shows is exactly what ``fedaegis show`` shows: the run
config as parameters, every round's global metrics with the round as the step, and every
robustness cell (attack, epsilon) as metrics ``robust/<attack>/eps <x>:255/<name>`` per round.
Tags hold the fedaegis run id, uuid, status and database (password masked). Only aggregates
reach MLflow: nothing per site. A local ``file:`` store needs no server; MLflow 3 keeps that
backend in maintenance mode behind ``MLFLOW_ALLOW_FILE_STORE``, which is set for ``file:`` URIs.
MLflow is an optional extra: ``pip install "fedaegis[mlflow]"``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from typing import Any

EXPERIMENT = "fedaegis"
_BAD = re.compile(r"[^0-9A-Za-z_\-. :/]")  # characters MLflow refuses in metric and param names


def _name(text: str) -> str:
    return _BAD.sub("_", text)


def check_mlflow(uri: str) -> None:
    """Refuse a tracking URI MLflow cannot use, before anything runs (``ValueError`` naming it)."""
    try:
        import mlflow  # noqa: F401
    except ImportError as exc:
        raise ValueError(f"--mlflow {uri}: MLflow is not installed (pip install \"fedaegis[mlflow]\")") from exc
    if not uri or not re.match(r"^(file:|https?://|sqlite:|postgresql|mysql|databricks)", uri):
        raise ValueError(f"--mlflow {uri!r}: expected a tracking URI such as file:///path/mlruns or http://host:5000")


def _client(uri: str):
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def log_run(run: Mapping[str, Any], uri: str, experiment: str = EXPERIMENT, db_url: str = "") -> str:
    """Copy a stored run (``RunStore.get_run``) to MLflow at ``uri``; returns the MLflow run id."""
    from mlflow.entities import Metric, Param, RunTag

    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment)
    tags = {"fedaegis.run-id": str(run["id"]), "fedaegis.uuid": str(run["uuid"]),
            "fedaegis.status": str(run["status"]), "mlflow.runName": str(run.get("name") or f"fedaegis run {run['id']}")}
    if db_url:
        from sqlalchemy.engine import make_url

        tags["fedaegis.database"] = make_url(db_url).render_as_string(hide_password=True)
    created = client.create_run(exp_id, tags=tags)
    run_id = created.info.run_id
    params = [Param(_name(k), str(v)[:6000]) for k, v in sorted(run.get("config", {}).items())]
    metrics = []
    timestamp = int(time.time() * 1000)
    for rnd in run["rounds"]:
        step = int(rnd["number"])
        for name, value in rnd["metrics"].items():
            if isinstance(value, int | float):
                metrics.append(Metric(_name(name), float(value), timestamp, step))
        for row in rnd.get("metric_rows", []):
            if row["phase"] == "attack" and row["epsilon"] is not None:
                key = f"robust/{row['attack']}/eps {row['epsilon'] * 255:.4g}:255/{row['name']}"
                metrics.append(Metric(_name(key), float(row["value"]), timestamp, step))
    for i in range(0, len(params), 100):  # MLflow's batch limits: 100 params, 1000 metrics per call
        client.log_batch(run_id, params=params[i:i + 100])
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i:i + 1000], tags=[RunTag("fedaegis.rounds", str(len(run["rounds"])))])
    client.set_terminated(run_id, status="FINISHED" if run["status"] == "completed" else "FAILED")
    return run_id
