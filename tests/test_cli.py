"""The fedaegis CLI on a real database: runs/show tables and JSON, and refusal of bad input."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from fedaegis.orchestration.cli import app
from fedaegis.shared.store import MetricValue, RoundRecord, RunStore

runner = CliRunner()


def _stored_run(db_url: str) -> int:
    store = RunStore(db_url)
    run_id = store.create_run(uuid="abc", name="demo", config={"model": "cnn", "num-server-rounds": 2}, num_rounds=2)
    for n, acc in ((1, 0.81), (2, 0.86)):
        store.record_round(run_id, RoundRecord(
            number=n, train_replies=2, evaluate_replies=2,
            metrics=[MetricValue("evaluate", "accuracy", acc), MetricValue("evaluate", "loss", 0.4),
                     MetricValue("evaluate", "num-examples", 100), MetricValue("train", "train-accuracy", 0.9)],
        ))
    store.finish_run(run_id)
    return run_id


def test_runs_and_show_json(db_url):
    run_id = _stored_run(db_url)
    res = runner.invoke(app, ["runs", "--db-url", db_url, "--json"])
    assert res.exit_code == 0, res.output
    listed = json.loads(res.stdout)
    assert listed["schema"] == 1
    runs = listed["runs"]
    assert [r["id"] for r in runs] == [run_id]
    assert runs[0]["config"]["model"] == "cnn"
    res = runner.invoke(app, ["show", str(run_id), "--db-url", db_url, "--json"])
    assert res.exit_code == 0, res.output
    shown = json.loads(res.stdout)
    assert shown["schema"] == 1 and shown["id"] == run_id and shown["config"]["num-server-rounds"] == 2
    assert [(r["round"], r["accuracy"], r["loss"]) for r in shown["rounds"]] == [(1, 0.81, 0.4), (2, 0.86, 0.4)]


def test_tables(db_url):
    run_id = _stored_run(db_url)
    res = runner.invoke(app, ["runs", "--db-url", db_url])
    assert res.exit_code == 0 and "demo" in res.stdout and "0.8600" in res.stdout
    res = runner.invoke(app, ["show", "abc", "--db-url", db_url])
    assert res.exit_code == 0 and "0.8100" in res.stdout and "num-server-rounds" in res.stdout


def test_unknown_run_is_a_clear_error(db_url):
    res = runner.invoke(app, ["show", "42", "--db-url", db_url])
    assert res.exit_code == 2 and "no run '42'" in res.output


def test_bad_config_is_refused_before_starting(db_url):
    res = runner.invoke(app, ["simulate", "--db-url", db_url, "-c", "learning-rate=-1"])
    assert res.exit_code == 2 and "learning-rate" in res.output
    res = runner.invoke(app, ["simulate", "--db-url", db_url, "--partitioning", "random"])
    assert res.exit_code == 2 and "partitioning" in res.output
    res = runner.invoke(app, ["simulate", "--db-url", db_url, "--dataset", "/nonexistent/data.npz"])
    assert res.exit_code == 2 and "/nonexistent/data.npz" in res.output
    assert RunStore(db_url).list_runs() == []


def test_suppressed_training_metrics_are_withheld_not_zero(db_url):
    """A training reply suppressed by min-cell-size keeps its FedAvg weight but reports no accuracy or loss."""
    from flwr.app import MetricRecord, RecordDict

    from fedaegis.server.aggregation import sum_metric_records
    from fedaegis.shared.reply.protocol import suppress_small_cells

    small = suppress_small_cells({"num-examples": 4, "train-correct": 3, "train-loss-sum": 2.0}, 10,
                                 keep=("num-examples",))
    big = suppress_small_cells({"num-examples": 40, "train-correct": 30, "train-loss-sum": 20.0}, 10,
                               keep=("num-examples",))
    alone = sum_metric_records([RecordDict({"metrics": MetricRecord(small)})], "num-examples")
    assert alone["num-examples"] == 4 and "train-accuracy" not in alone and "train-loss" not in alone
    both = sum_metric_records([RecordDict({"metrics": MetricRecord(m)}) for m in (small, big)], "num-examples")
    assert both["train-accuracy"] == 30 / 40  # the suppressed site's examples count in no ratio

    store = RunStore(db_url)
    run_id = store.create_run(uuid="w", name="small", config={"min-cell-size": 10}, num_rounds=1)
    store.record_round(run_id, RoundRecord(number=1, train_replies=1, evaluate_replies=1, metrics=[
        MetricValue("train", "num-examples", 4), MetricValue("train", "suppressed-count", 1),
        MetricValue("evaluate", "num-examples", 0), MetricValue("evaluate", "suppressed-count", 1)]))
    store.finish_run(run_id)
    res = runner.invoke(app, ["show", "w", "--db-url", db_url])
    assert res.exit_code == 0 and "0.0000" not in res.stdout and "-: withheld" in res.stdout
    (rnd,) = json.loads(runner.invoke(app, ["show", "w", "--db-url", db_url, "--json"]).stdout)["rounds"]
    assert rnd["train_accuracy"] is None and rnd["accuracy"] is None
    assert "min-cell-size" in rnd["withheld"]["train_accuracy"] and "min-cell-size" in rnd["withheld"]["accuracy"]
    res = runner.invoke(app, ["runs", "--db-url", db_url])
    assert "-: withheld" in res.stdout


def test_runs_show_status_and_every_json_is_versioned(db_url, tmp_path):
    run_id = _stored_run(db_url)
    store = RunStore(db_url)
    failed = store.create_run(uuid="f", name="broken", config={}, num_rounds=2)
    store.finish_run(failed, status="failed", error="no round was evaluated by any site")
    res = runner.invoke(app, ["runs", "--db-url", db_url])
    assert "completed" in res.stdout and "failed" in res.stdout
    for args in (["runs"], ["show", str(run_id)], ["privacy"], ["report", str(run_id)]):
        res = runner.invoke(app, [*args, "--db-url", db_url, "--json"])
        assert res.exit_code == 0, (args, res.output)
        doc = json.loads(res.stdout)
        assert (doc.get("schema") or doc.get("version")) == 1 or doc.get("format"), args
    assert json.loads(runner.invoke(app, ["runs", "--db-url", db_url, "--json"]).stdout)["schema"] == 1
