"""``--mlflow``: a stored run is copied to MLflow and read back with MLflow's own client."""

from __future__ import annotations

import pytest

from fedaegis.shared.store import RunStore

mlflow = pytest.importorskip("mlflow", reason="MLflow is an optional extra (fedaegis[mlflow])")

from test_report import _config, _round  # noqa: E402 - the report tests' real-shaped rounds


def test_run_config_rounds_and_robustness_cells_reach_mlflow(db_url, tmp_path):
    from mlflow.tracking import MlflowClient

    from fedaegis.orchestration.tracking import log_run

    store = RunStore(db_url)
    rid = store.create_run(uuid="d" * 32, name="tracked", config=_config(), num_rounds=3)
    for n in (1, 2, 3):
        store.record_round(rid, _round(n, sites=False))
    store.finish_run(rid)
    run = store.get_run(rid)
    uri = (tmp_path / "mlruns").as_uri()

    mlflow_id = log_run(run, uri, db_url=db_url)

    client = MlflowClient(tracking_uri=uri)
    got = client.get_run(mlflow_id)
    assert got.info.status == "FINISHED" and got.data.tags["fedaegis.uuid"] == "d" * 32
    assert got.data.tags["mlflow.runName"] == "tracked" and got.info.experiment_id
    assert got.data.params["attacks"] == "fgsm,pgd" and got.data.params["model"] == "cnn"
    history = client.get_metric_history(mlflow_id, "evaluate.accuracy")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2, 3]
    assert {m.step: m.value for m in history} == pytest.approx(
        {r["number"]: r["metrics"]["evaluate.accuracy"] for r in run["rounds"]})
    robust = client.get_metric_history(mlflow_id, "robust/pgd/eps 8:255/robust-accuracy")
    final = next(r["value"] for r in run["rounds"][-1]["metric_rows"] if r["phase"] == "attack"
                 and r["attack"] == "pgd" and round(r["epsilon"] * 255) == 8 and r["name"] == "robust-accuracy")
    assert len(robust) == 3 and max(robust, key=lambda m: m.step).value == pytest.approx(final)
    assert not any(k.startswith("site") for k in got.data.metrics)  # aggregates only


def test_bad_tracking_uri_is_refused():
    from fedaegis.orchestration.tracking import check_mlflow

    with pytest.raises(ValueError, match="--mlflow 'mlruns': expected a tracking URI"):
        check_mlflow("mlruns")
