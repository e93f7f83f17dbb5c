"""End to end: the default site policy keeps the figures (within its declared noise) and records refusals."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fedaegis.orchestration.cli import app
from fedaegis.orchestration.simulation import SimulationResources, simulate
from fedaegis.shared.run.config import fedaegis_home
from fedaegis.shared.store import RunStore

pytestmark = pytest.mark.slow

REQUEST = {"num-server-rounds": 1, "local-epochs": 1, "attacks": "fgsm", "epsilons": "8/255", "attack-samples": 64}


def _run(db_url: str, policy: str | None, **extra) -> dict:
    uuid = simulate({**REQUEST, "db-url": db_url, **extra}, num_sites=2, resources=SimulationResources(num_cpus=2),
                    site_policy=policy)
    return RunStore(db_url).get_run(uuid)


def test_default_policy_keeps_the_figures_and_records_refusals(db_url, tmp_path, small_pneumonia):
    # the built-in defaults, with the same site secrets (so the same fixed sets) as the suite's permissive policy
    defaults = tmp_path / "defaults.toml"
    defaults.write_text(f"[site]\nstate-dir = '{fedaegis_home() / 'site'}'\n")
    exact = _run(db_url, None, dataset=small_pneumonia)["rounds"][0]  # tests/policies/permissive.toml: no DP
    noisy = _run(db_url, str(defaults), dataset=small_pneumonia)["rounds"][0]
    privacy = {r["name"]: r["value"] for r in noisy["metric_rows"] if r["phase"] == "privacy"}
    assert privacy["epsilon-spent"] == 1.0 and privacy["noise-std"] > 0
    n = exact["metrics"]["evaluate.num-examples"]
    assert noisy["metrics"]["evaluate.num-examples"] == n == 624
    # two sites' Laplace noise on the correct count: 6 std of the sum (12 of its scale b) is exceeded with
    # probability e^-12 (1 + 12/2) = 4e-5; 4 std, as before, 1.7e-3 (heavy tails: this is no Gaussian)
    half = 6 * privacy["noise-std"] * 2**0.5 / n
    assert abs(noisy["metrics"]["evaluate.accuracy"] - exact["metrics"]["evaluate.accuracy"]) <= half
    cell = {r["name"]: r["value"] for r in noisy["metric_rows"] if r["phase"] == "attack"}
    ref = {r["name"]: r["value"] for r in exact["metric_rows"] if r["phase"] == "attack"}
    assert cell["n-count"] == ref["n-count"] == 128  # each site's fixed set of 64
    assert abs(cell["robust-accuracy"] - ref["robust-accuracy"]) <= 4 * privacy["noise-std"] * 2**0.5 / 128 * 2

    # a request the defaults forbid (one image's inversion audit): training refused, evaluation still served
    from fedaegis.orchestration.runtime import RuntimeFailure

    with pytest.raises(RuntimeFailure):  # no site trained: the run is stored as failed, and Flower says so
        simulate({**REQUEST, "db-url": db_url, "dataset": small_pneumonia, "run-uuid": "r" * 32,
                  "inversion-audit": "idlg", "inversion-images": 1},
                 num_sites=2, resources=SimulationResources(num_cpus=2), site_policy=str(defaults))
    refused = RunStore(db_url).get_run("r" * 32)
    assert refused["status"] == "failed" and "release.min-cell-size" in refused["error"]
    rnd = refused["rounds"][0]
    assert rnd["train_replies"] == 0 and rnd["evaluate_replies"] == 2
    assert rnd["metrics"]["refusal.release.min-cell-size"] == 2.0
    shown = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["show", refused["uuid"], "--db-url", db_url])
    assert shown.exit_code == 0 and "refused by the sites' policies" in shown.stdout
    assert "release.min-cell-size" in shown.stdout
    as_json = CliRunner().invoke(app, ["show", refused["uuid"], "--db-url", db_url, "--json"])
    refusals = json.JSONDecoder().raw_decode(as_json.stdout[as_json.stdout.index("{"):])[0]["rounds"][0]["refusals"]
    assert sorted(r["field"] for r in refusals) == ["release.min-cell-size"] * 2
    from fedaegis.orchestration.report import build_report

    reported = build_report(RunStore(db_url).get_run(refused["uuid"]))["privacy"]["refusals"]
    assert [(r["request"], r["field"]) for r in reported] == [("train", "release.min-cell-size")] * 2
