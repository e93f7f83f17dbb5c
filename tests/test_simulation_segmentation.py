"""End to end: federated segmentation on real hippocampus MRI, attacked at every site."""

from __future__ import annotations

import pytest

from fedaegis.orchestration.simulation import SimulationResources, simulate
from fedaegis.shared.models.checkpoint import load_checkpoint
from fedaegis.shared.store import RunStore

pytestmark = pytest.mark.slow


def test_federated_segmentation_with_attacks(db_url, shared_data):
    run_uuid = simulate(
        {"task": "segmentation", "dataset": str(shared_data / "msd_hippocampus"), "spatial-dims": 2,
         "num-server-rounds": 2, "local-epochs": 2, "seg-max-volumes": 24, "min-cell-size": 2,
         "seg-attacks": "pgd,asma", "seg-attack-steps": 3, "epsilons": "4/255", "db-url": db_url},
        num_sites=2, resources=SimulationResources(num_cpus=2),
    )
    store = RunStore(db_url)
    run = store.get_run(run_uuid)
    assert run["status"] == "completed"
    last = run["rounds"][-1]
    assert last["evaluate_replies"] == 2 and last["failures"] == 0
    seg = {r["name"]: r["value"] for r in last["metric_rows"] if r["phase"] == "segmentation"}
    clean = seg["seg.clean.dice"]
    pgd = seg["seg.attack.pgd.linf.eps=0.0156863.dice"]
    assert 0 < clean <= 1
    assert pgd <= clean and seg["seg.attack.pgd.linf.eps=0.0156863.dice-drop"] >= 0
    assert seg["seg.robust.linf.eps=0.0156863.dice"] <= min(pgd, seg["seg.attack.asma.linf.eps=0.0156863.dice"])
    model, meta = load_checkpoint(store.checkpoint_path(run_uuid))
    assert meta["task"] == "segmentation"
