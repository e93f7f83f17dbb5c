"""End to end: sites noise their releases under their own policy; the ledger runs out; intervals."""

from __future__ import annotations

import pytest

from fedaegis.orchestration.simulation import SimulationResources, simulate
from fedaegis.shared.store import RunStore

pytestmark = pytest.mark.slow


def _rows(rnd, phase):
    return {r["name"]: r["value"] for r in rnd["metric_rows"] if r["phase"] == phase and not r["attack"]}


def test_metric_dp_ledger_and_intervals(db_url, tmp_path, small_pneumonia):
    policy = tmp_path / "site-policy.toml"
    policy.write_text(f"[release]\nmin-cell-size = 0\n[dp]\nmechanism = 'laplace'\nmax-epsilon = 1.0\n"
                      f"lifetime-epsilon = 3.0\n[site]\nstate-dir = '{tmp_path / 'sites'}'\n")
    run_uuid = simulate(
        {"num-server-rounds": 2, "db-url": db_url, "dataset": small_pneumonia, "local-epochs": 1, "metric-dp": "laplace",
         "metric-epsilon": 1.0, "metric-epsilon-budget": 100.0},  # the request's budget is not the site's
        num_sites=2, resources=SimulationResources(num_cpus=2), site_policy=str(policy),
    )
    first, second = RunStore(db_url).get_run(run_uuid)["rounds"]
    # round 1: each site released its training and its evaluation counts (epsilon 1 each)
    privacy = _rows(first, "privacy")
    assert privacy["epsilon-spent"] == 1.0 and privacy["withheld-sites"] == 0 and privacy["noise-std"] > 0
    ev = _rows(first, "evaluate")
    assert ev["num-examples"] == 624  # sizes of the sites' sets are public; their counts are noised
    assert 0 <= ev["accuracy-ci-low"] < ev["accuracy"] < ev["accuracy-ci-high"] <= 1
    # round 2: training spends the third unit; the ledger cannot pay for evaluation: refused
    assert second["evaluate_replies"] == 0
    assert _rows(second, "refusal") == {"dp.lifetime-epsilon": 2.0}
    for node, rows in second["sites"].items():
        assert {(r["name"], r["attack"]) for r in rows if r["phase"] == "refusal"} == {("dp.lifetime-epsilon", "evaluate")}
