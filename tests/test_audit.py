"""``fedaegis audit``: a leaky ClientApp is caught reply by reply; fedaegis' own ClientApp passes."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fedaegis.orchestration import audit as audit_mod
from fedaegis.orchestration.cli import app

audit_mod.register(app)  # cli.py may already do this; register is idempotent

LEAKY = "fedaegis.tests.leaky_client:app"  # importable by Ray's workers too (tests/leaky_client.py)


def _json(stdout: str) -> dict:
    """The JSON document on stdout (Ray may forward a worker's log lines around it)."""
    return json.JSONDecoder().raw_decode(stdout[stdout.index("{"):])[0]


def test_register_is_idempotent():
    before = len(app.registered_commands)
    audit_mod.register(app)
    assert len(app.registered_commands) == before
    assert sum(c.name == "audit" for c in app.registered_commands) == 1


@pytest.mark.parametrize(("ref", "message"), [
    ("fedaegis.tests.leaky_client", "module:attribute"),
    ("fedaegis.tests.leaky_client:nothing", "no attribute"),
    ("fedaegis.tests.leaky_client:LEAKY_METRIC", "not a flwr ClientApp"),
    ("no_such_module_xyz:app", "cannot import"),
])
def test_bad_client_app_is_a_usage_error(ref, message):
    res = CliRunner().invoke(app, ["audit", "--client-app", ref])
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split())  # Rich wraps long lines


@pytest.mark.slow
def test_leaky_client_fails_the_audit_naming_the_metric(small_pneumonia):
    res = CliRunner().invoke(app, ["audit", "--client-app", LEAKY, "--sites", "2", "--rounds", "1", "--json",
                                   "--dataset", small_pneumonia, "--num-cpus", "2"])
    assert res.exit_code == 1, res.output
    out = _json(res.stdout)
    assert out["verdict"] == "FAIL" and out["passed"] is False
    by_type = {}
    for reply in out["replies"]:
        by_type.setdefault(reply["message_type"], []).append(reply)
    assert len(by_type["train"]) == 2 and len(by_type["evaluate"]) == 2
    for reply in by_type["train"]:
        assert reply["verdict"] == "ok" and reply["violations"] == [] and reply["round"] == 1
    for reply in by_type["evaluate"]:
        assert reply["verdict"] == "VIOLATION" and "predictions" in reply["metrics"]
        assert "metric 'predictions' is list, not a scalar" in reply["violations"]
    assert out["violations"] == 2 and "predictions" in " ".join(out["reasons"])
    # the violating replies were quarantined: the server never aggregated them, so no round was
    # evaluated and the run is stored as failed, saying so (not as a completed run without results)
    assert out["run_status"] == "failed" and "no round was evaluated" in out["server_error"]


@pytest.mark.slow
def test_fedaegis_client_passes_the_audit(small_pneumonia):
    res = CliRunner(env={"COLUMNS": "250"}).invoke(
        app, ["audit", "--sites", "2", "--rounds", "1", "--dataset", small_pneumonia, "--num-cpus", "2"])
    assert res.exit_code == 0, res.output
    assert "PASS" in res.stdout and "VIOLATION" not in res.stdout
    assert "4 replies from 2 sites" in res.stdout
    for name in ("num-examples", "correct", "loss-sum", "train-correct"):
        assert name in res.stdout


@pytest.mark.slow
def test_labels_in_keys_names_and_float_bits_fail_the_audit(small_pneumonia):
    """Issue 13: 1000 per-sample keys, labels in a name and in a float's bits all passed the old audit."""
    res = CliRunner().invoke(app, ["audit", "--client-app", "fedaegis.tests.leaky_encodings:app", "--sites", "2",
                                   "--rounds", "1", "--json", "--dataset", small_pneumonia, "--num-cpus", "2"])
    assert res.exit_code == 1, res.output
    out = _json(res.stdout)
    evaluate = [r for r in out["replies"] if r["message_type"] == "evaluate"]
    assert len(evaluate) == 2
    for reply in evaluate:
        found = " ".join(reply["violations"])
        assert "'sample-0-count' is not a key this request asked for" in found
        assert "'correct." in found and "more than the" in found
        assert "'loss-sum' is not on the release grid" in found
