"""End to end: 2 of 10 sites implant a boosted backdoor; FedAvg takes it, Krum resists."""

from __future__ import annotations

import pytest

from fedaegis.orchestration.simulation import SimulationResources, simulate
from fedaegis.shared.store import RunStore

pytestmark = pytest.mark.slow

ATTACK = {"num-server-rounds": 3, "local-epochs": 2, "threat": "backdoor", "num-malicious": 2,
          "poison-fraction": 0.5, "boost": 5.0, "target-class": 0, "min-sites": 10}


def _final(db_url: str, aggregation: str) -> dict:
    run_uuid = simulate({**ATTACK, "aggregation": aggregation, "db-url": db_url}, num_sites=10,
                        resources=SimulationResources(num_cpus=2))
    return RunStore(db_url).get_run(run_uuid)["rounds"][-1]["metrics"]


def test_backdoor_succeeds_under_fedavg_and_krum_resists(db_url):
    fedavg = _final(db_url, "fedavg")
    krum = _final(db_url, "krum")
    # every honest site measured the attack on its own test data, reported as counts
    assert fedavg["evaluate.backdoor.num-examples"] == krum["evaluate.backdoor.num-examples"] > 0
    assert fedavg["evaluate.backdoor-success"] >= 0.8
    assert krum["evaluate.backdoor-success"] <= 0.5 * fedavg["evaluate.backdoor-success"]
    assert krum["evaluate.accuracy"] > fedavg["evaluate.accuracy"]
