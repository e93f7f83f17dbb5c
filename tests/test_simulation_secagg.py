"""End to end: evaluation under secure aggregation gives the same totals, and no per-site value."""

from __future__ import annotations

import pytest
from flwr.app import MessageType

from fedaegis.orchestration.simulation import SimulationResources, simulate
from fedaegis.server.audit import AuditingGrid
from fedaegis.shared.store import RunStore

pytestmark = pytest.mark.slow

CONFIG = {"num-server-rounds": 1, "local-epochs": 1, "attacks": "fgsm", "epsilons": "8/255", "attack-samples": 16}


def _run(db_url: str, dataset: str, secure: bool, train: bool = False) -> tuple[dict, AuditingGrid]:
    grids: list[AuditingGrid] = []
    run_uuid = simulate(
        {**CONFIG, "db-url": db_url, "dataset": dataset, "secure-aggregation": secure,
         "secure-aggregation-train": train}, num_sites=3,
        resources=SimulationResources(num_cpus=2), wrap_grid=lambda g: grids.append(AuditingGrid(g)) or grids[-1],
    )
    return RunStore(db_url).get_run(run_uuid), grids[0]


@pytest.fixture(scope="module")
def plain(tmp_path_factory, small_pneumonia) -> dict:
    return _run(f"sqlite:///{tmp_path_factory.mktemp('plain') / 'runs.db'}", small_pneumonia, secure=False)[0]


def test_secure_aggregation_reveals_only_the_sum(db_url, plain, small_pneumonia):
    secure, grid = _run(db_url, small_pneumonia, secure=True)
    (p,), (s,) = plain["rounds"], secure["rounds"]
    # the same federation-wide totals (training is seeded, so both runs evaluate the same model)
    for key in ("evaluate.num-examples", "evaluate.correct"):
        assert s["metrics"][key] == p["metrics"][key]
    assert s["metrics"]["evaluate.accuracy"] == pytest.approx(p["metrics"]["evaluate.accuracy"])
    assert s["metrics"]["evaluate.loss-sum"] == pytest.approx(p["metrics"]["evaluate.loss-sum"], abs=1e-4)
    plain_cells = {r["name"]: r["value"] for r in p["metric_rows"] if r["phase"] == "attack"}
    secure_cells = {r["name"]: r["value"] for r in s["metric_rows"] if r["phase"] == "attack"}
    assert secure_cells["robust-correct"] == plain_cells["robust-correct"]
    # the server stored no per-site evaluation value (the plain run has one per site)
    evaluated = lambda rnd: {n for n, rows in rnd["sites"].items() if any(r["phase"] == "evaluate" for r in rows)}  # noqa: E731
    assert len(evaluated(p)) == 3 and evaluated(s) == set()
    # and no evaluation reply carried a plain value: only masked integers and a public key
    assert grid.violations == []
    evaluate_replies = [r for r in grid.replies if r.metadata.message_type == MessageType.EVALUATE]
    assert len(evaluate_replies) == 3
    for reply in evaluate_replies:
        assert all(name.startswith("secagg.") for name in reply.content["metrics"])
    # keys, shares and unmasking: each site answered three queries, all in its secagg record only
    key_replies = [r for r in grid.replies if r.metadata.message_type == MessageType.QUERY]
    assert len(key_replies) == 9 and all(set(r.content) == {"secagg"} for r in key_replies)


def test_secure_training_gives_the_plain_accuracy_within_quantisation(db_url, plain, small_pneumonia):
    secure, grid = _run(db_url, small_pneumonia, secure=True, train=True)
    (p,), (s,) = plain["rounds"], secure["rounds"]
    # the FedAvg model differs from the plain one by the 2**-20 fixed point only
    assert s["metrics"]["evaluate.num-examples"] == p["metrics"]["evaluate.num-examples"]
    assert s["metrics"]["evaluate.accuracy"] == pytest.approx(p["metrics"]["evaluate.accuracy"], abs=0.01)
    assert s["metrics"]["evaluate.loss"] == pytest.approx(p["metrics"]["evaluate.loss"], rel=1e-3)
    assert s["metrics"]["train.num-examples"] == p["metrics"]["train.num-examples"]
    # no training update left a site in the clear, and the server kept no per-site training value
    train_replies = [r for r in grid.replies if r.metadata.message_type == MessageType.TRAIN]
    assert len(train_replies) == 3 and grid.violations == []
    for reply in train_replies:
        assert all(a.numpy().dtype == "uint64" for a in reply.content["arrays"].values())
        assert all(name.startswith("secagg.") for name in reply.content["metrics"])
    assert not any(r["phase"] == "train" for rows in s["sites"].values() for r in rows)
