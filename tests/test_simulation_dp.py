"""End to end: sites noise their counts, the budget runs out, the server reports intervals."""

from __future__ import annotations

import pytest

from fedaegis.orchestration.simulation import SimulationResources, simulate
from fedaegis.shared.store import RunStore

pytestmark = pytest.mark.slow


def _rows(rnd, phase):
    return {r["name"]: r["value"] for r in rnd["metric_rows"] if r["phase"] == phase and not r["attack"]}


def test_metric_dp_budget_and_intervals(db_url):
    run_uuid = simulate(
        {"num-server-rounds": 2, "db-url": db_url, "local-epochs": 1, "metric-dp": "laplace",
         "metric-epsilon": 1.0, "metric-epsilon-budget": 3.0},
        num_sites=2, resources=SimulationResources(num_cpus=2),
    )
    first, second = RunStore(db_url).get_run(run_uuid)["rounds"]
    # round 1: each site released its training and its evaluation counts (2 x epsilon 1)
    privacy = _rows(first, "privacy")
    assert privacy["epsilon-spent"] == 2.0 and privacy["withheld-sites"] == 0
    assert privacy["noise-std"] > 0
    ev = _rows(first, "evaluate")
    assert ev["num-examples"] != 624  # noised
    assert abs(ev["num-examples"] - 624) < 60
    assert 0 <= ev["accuracy-ci-low"] < ev["accuracy"] < ev["accuracy-ci-high"] <= 1
    # round 2: training spends the third unit; evaluation would exceed the budget and is withheld
    privacy = _rows(second, "privacy")
    assert privacy["epsilon-spent"] == 3.0 and privacy["withheld-sites"] == 2
    assert _rows(second, "evaluate")["num-examples"] == 0
