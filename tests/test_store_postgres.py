"""The results database on a real PostgreSQL server: the store, a federated run, and the CLI.

The server comes from Debian's ``postgresql`` package (tests/setup.sh installs it). Without it
the tests skip with the reason, except in CI (``CI`` set), where a missing server is a failure.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from fedaegis.shared.store import MetricValue, RoundRecord, RunNotFoundError, RunStore

from postgres_server import PASSWORD, PostgresServer, find_bindir, start_postgres

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    bindir = find_bindir()
    if bindir is None:
        why = ("PostgreSQL server binaries (initdb, postgres) not found under /usr/lib/postgresql/*/bin "
               "or on PATH; install Debian's 'postgresql' package (tests/setup.sh does, as root)")
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    server = start_postgres(bindir)
    try:
        yield server
    finally:
        server.stop()


def test_store_roundtrip_on_postgres(postgres):
    store = RunStore(postgres.url)
    assert store.engine.dialect.name == "postgresql" and store.engine.dialect.driver == "psycopg"
    assert PASSWORD not in store.url  # printable: the password is masked
    run_id = store.create_run(uuid="pg-1", name="pg", config={"model": "cnn", "seed": 3, "lr": 0.5}, num_rounds=2)
    for n, acc in ((1, 0.7), (2, 0.8)):
        store.record_round(run_id, RoundRecord(
            number=n, train_replies=2, evaluate_replies=2,
            metrics=[MetricValue("evaluate", "accuracy", acc),
                     MetricValue("attack", "robust-accuracy", acc / 2, attack="pgd", epsilon=8 / 255)],
            site_metrics={"11": [MetricValue("evaluate", "correct", 25)]},
        ))
    store.finish_run(run_id)

    # A plain postgresql:// URL means psycopg 3 too, and reads what the first engine wrote.
    again = RunStore(postgres.url.replace("postgresql+psycopg://", "postgresql://"))
    assert again.engine.dialect.driver == "psycopg"
    run = again.get_run("pg-1")
    assert run["id"] == run_id and run["status"] == "completed" and run["finished_at"]
    assert run["config"] == {"model": "cnn", "seed": 3, "lr": 0.5}
    assert [r["metrics"]["evaluate.accuracy"] for r in run["rounds"]] == [0.7, 0.8]
    assert run["rounds"][1]["metric_rows"][1]["epsilon"] == pytest.approx(8 / 255)
    assert set(run["rounds"][0]["sites"]) == {"11"}
    assert "pg-1" in [r["uuid"] for r in again.list_runs()]
    with pytest.raises(RunNotFoundError) as exc:
        again.get_run("missing")
    assert PASSWORD not in str(exc.value)


def test_federated_run_into_postgres(postgres, monkeypatch, small_pneumonia):
    from fedaegis.orchestration.cli import app
    from fedaegis.orchestration.simulation import SimulationResources, simulate

    run_uuid = simulate(
        {"num-server-rounds": 1, "local-epochs": 1, "db-url": postgres.url, "run-name": "pg-sim",
         "attack-samples": 8, "dataset": small_pneumonia},
        num_sites=2,
        resources=SimulationResources(num_cpus=2),
    )
    runner = CliRunner()
    res = runner.invoke(app, ["show", run_uuid, "--db-url", postgres.url, "--json"])
    assert res.exit_code == 0, res.output
    shown = json.loads(res.stdout)
    assert shown["uuid"] == run_uuid and shown["name"] == "pg-sim" and shown["status"] == "completed"
    assert shown["config"]["num-server-rounds"] == 1 and "db-url" not in shown["config"]
    (rnd,) = shown["rounds"]
    assert rnd["sites"] == 2 and rnd["failures"] == 0 and rnd["num_examples"] == 624
    assert 0 <= rnd["accuracy"] <= 1

    monkeypatch.setenv("FEDAEGIS_DB_URL", postgres.url)  # the environment names the database too
    res = runner.invoke(app, ["show", run_uuid, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["id"] == shown["id"]


def test_old_database_gains_the_family_column_on_postgres(postgres):
    from test_store import migrated_families

    assert set(migrated_families(postgres.url).values()) == {
        "basics", "attacks", "hardening", "detection", "defences", "refusals"}
