"""End to end: 2 of 10 sites implant a boosted backdoor; FedAvg takes it, Multi-Krum blocks it.

The attack-success rate counts triggered test images of the non-target class that are
classified as the target; a clean federation (the same sites, none malicious) gives
the baseline rate - the model's own error on those images - and the main accuracy the
robust rule must keep.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from fedaegis.orchestration.cli import app as cli
from fedaegis.orchestration.simulation import SimulationResources, simulate
from fedaegis.shared.store import RunStore

pytestmark = pytest.mark.slow

ATTACK = {"num-server-rounds": 3, "local-epochs": 5, "threat": "backdoor", "num-malicious": 2,
          "poison-fraction": 0.5, "boost": 5.0, "target-class": 0, "min-sites": 10}


def _run(db_url: str, **overrides) -> tuple[str, dict]:
    run_uuid = simulate({**ATTACK, **overrides, "db-url": db_url}, num_sites=10,
                        resources=SimulationResources(num_cpus=2))
    return run_uuid, RunStore(db_url).get_run(run_uuid)["rounds"][-1]["metrics"]


def test_backdoor_succeeds_under_fedavg_and_multikrum_blocks_it(db_url):
    _, clean = _run(db_url, **{"num-malicious": 0})
    _, fedavg = _run(db_url, aggregation="fedavg")
    robust_uuid, robust = _run(db_url, aggregation="multikrum")
    # every honest site measured the attack on its own test data, reported as counts
    assert fedavg["evaluate.backdoor.num-examples"] == robust["evaluate.backdoor.num-examples"] > 0
    assert fedavg["evaluate.backdoor-success"] >= 0.8
    assert robust["evaluate.backdoor-success"] <= 0.10
    assert robust["evaluate.accuracy"] >= clean["evaluate.accuracy"] - 0.03
    shown = CliRunner().invoke(cli, ["show", robust_uuid, "--db-url", db_url])
    assert shown.exit_code == 0 and "attack-success-rate" in shown.output, shown.output
