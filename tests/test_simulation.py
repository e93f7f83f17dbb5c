"""End to end: a real Flower simulation on Ray, read back from the database, replies audited."""

from __future__ import annotations

import pytest
from flwr.app import ArrayRecord, MessageType, MetricRecord

from fedaegis.orchestration.simulation import SimulationResources, simulate
from fedaegis.server.audit import AuditingGrid
from fedaegis.shared.reply.protocol import is_aggregate_name
from fedaegis.shared.reply.schema import RESOLUTION
from fedaegis.shared.store import RunStore

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def federated_run(tmp_path_factory):
    db = f"sqlite:///{tmp_path_factory.mktemp('sim') / 'runs.db'}"
    grids: list[AuditingGrid] = []
    events: list[dict] = []

    def wrap(grid):
        grids.append(AuditingGrid(grid))
        return grids[-1]

    run_uuid = simulate(
        {"num-server-rounds": 2, "db-url": db, "run-name": "test-3x2", "local-epochs": 1,
         "attacks": "fgsm,pgd", "epsilons": "2/255,8/255", "attack-samples": 32},
        num_sites=3,
        resources=SimulationResources(num_cpus=2),
        wrap_grid=wrap,
        progress=events.append,
    )
    return RunStore(db), run_uuid, grids[0], db, events


def test_run_is_stored_round_by_round(federated_run):
    store, run_uuid, *_ = federated_run
    run = store.get_run(run_uuid)
    assert run["status"] == "completed" and run["name"] == "test-3x2"
    assert [r["number"] for r in run["rounds"]] == [1, 2]
    for rnd in run["rounds"]:
        assert rnd["train_replies"] == 3 and rnd["evaluate_replies"] == 3 and rnd["failures"] == 0
        m = rnd["metrics"]
        assert m["evaluate.num-examples"] == 624  # the whole PneumoniaMNIST test split, across sites
        assert m["evaluate.accuracy"] == pytest.approx(m["evaluate.correct"] / 624)
        assert len(rnd["sites"]) == 3
        site_n = [next(v["value"] for v in rows if v["phase"] == "evaluate" and v["name"] == "num-examples")
                  for rows in rnd["sites"].values()]
        assert sum(site_n) == 624
    assert run["rounds"][-1]["metrics"]["evaluate.accuracy"] > 0.7
    assert run["config"]["num-server-rounds"] == 2 and "db-url" not in run["config"]


def test_final_model_checkpoint_loads(federated_run):
    from fedaegis.shared.models.checkpoint import load_checkpoint

    store, run_uuid, *_ = federated_run
    model, meta = load_checkpoint(store.checkpoint_path(run_uuid))
    assert meta["model"] == "cnn" and meta["num_classes"] == 2


def test_every_reply_holds_only_aggregates(federated_run):
    _, _, grid, *_ = federated_run
    assert len(grid.replies) == 2 * (3 + 3)  # 2 rounds x (3 train + 3 evaluate replies)
    assert grid.violations == []
    for reply in grid.replies:
        assert not reply.has_error()
        content = reply.content
        is_train = reply.metadata.message_type == MessageType.TRAIN
        assert set(content.keys()) == ({"arrays", "metrics"} if is_train else {"metrics"})
        metrics = content["metrics"]
        assert isinstance(metrics, MetricRecord)
        for name, value in metrics.items():
            assert isinstance(value, int | float) and not isinstance(value, list), name
            assert is_aggregate_name(name), name
        if is_train:
            arrays = content["arrays"]
            assert isinstance(arrays, ArrayRecord)
            # only model parameters: no array has a leading dimension the size of a batch of images
            assert all(tuple(a.shape[-2:]) != (28, 28) for a in arrays.values())


def test_robust_accuracy_per_attack_eps_in_the_final_round_only(federated_run):
    from fedaegis.shared.results.query import cells as family_cells

    store, run_uuid, grid, *_ = federated_run
    first, final = store.get_run(run_uuid)["rounds"]
    assert family_cells(first, "attacks") == []  # attack-rounds = "final" (the default): round 1 pays for no attack
    evaluations = [r for r in grid.replies if r.metadata.message_type == MessageType.EVALUATE]
    sent = [sorted(k for k in r.content["metrics"].keys() if k.startswith("attack.")) for r in evaluations]
    assert sent[:3] == [[], [], []] and all(len(keys) >= 4 * 3 for keys in sent[3:])  # the sites never ran them
    for rnd in [final]:
        cells = {(c["attack"], round(c["epsilon"] * 255)): c for c in family_cells(rnd, "attacks")}
        assert set(cells) == {("fgsm", 2), ("fgsm", 8), ("pgd", 2), ("pgd", 8)}
        for cell in cells.values():
            assert cell["n_count"] == 3 * 32  # every site attacked 32 of its test images
            assert cell["robust_accuracy"] <= cell["clean_accuracy"]
            # each site's sum is rounded to the release grid (shared/reply/schema.py): 3 sites, half a step each
            assert cell["mean_linf"] <= cell["epsilon"] + 3 * RESOLUTION / 2 / cell["successes"] + 1e-6
        assert cells[("pgd", 8)]["robust_accuracy"] < cells[("pgd", 8)]["clean_accuracy"]
        assert cells[("pgd", 8)]["robust_accuracy"] <= cells[("pgd", 2)]["robust_accuracy"]


def test_evaluate_command_attacks_the_stored_model(federated_run):
    import json

    from typer.testing import CliRunner

    from fedaegis.orchestration.cli import app

    _, run_uuid, _, db, _ = federated_run
    res = CliRunner().invoke(app, ["evaluate", run_uuid, "--db-url", db, "--attacks", "fgsm,pgd",
                                   "--epsilons", "8/255", "--samples", "64", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["samples"] == 64
    by_attack = {c["attack"]: c for c in out["results"]}
    assert by_attack["pgd"]["robust_accuracy"] < by_attack["pgd"]["clean_accuracy"]
    assert by_attack["pgd"]["robust_accuracy"] <= by_attack["fgsm"]["robust_accuracy"] + 1 / 64


def test_progress_events_follow_the_run_and_carry_no_site_values(federated_run):
    from fedaegis.orchestration.progress import RunProgress

    *_, everything = federated_run
    events = [e for e in everything if e["event"] != "work"]  # the server's; the sites' own below
    steps = [(e["event"], e["phase"], e["round"]) for e in events if e["event"] != "reply"]
    assert steps == [("sent", "train", 1), ("done", "train", 1), ("sent", "evaluate", 1), ("done", "evaluate", 1),
                     ("sent", "train", 2), ("done", "train", 2), ("sent", "evaluate", 2), ("done", "evaluate", 2)]
    replies = [e for e in events if e["event"] == "reply"]
    assert len(replies) == 2 * 2 * 3 and all(e["ok"] for e in replies)
    assert {e["site"] for e in replies} == set(events[0]["sites"]) and len(events[0]["sites"]) == 3
    # only the clock, the round and which node answered: nothing a site computed
    assert {k for e in events for k in e} <= {"event", "t", "phase", "round", "rounds", "sites", "site", "ok",
                                              "replies", "sent"}
    # each simulated site's own progress, for the display: its training epochs, its attacks (final round)
    work = [e for e in everything if e["event"] == "work"]
    assert {k for e in work for k in e} == {"event", "t", "site", "task", "done", "total", "unit"}
    assert {e["site"] for e in work if e["task"] == "training"} == set(events[0]["sites"])
    assert {(e["total"], e["unit"]) for e in work if e["task"] == "training"} == {(1, "epoch")}
    assert {e["total"] for e in work if e["task"] == "attacks"} == {32 * 2 * 2}  # samples x (fgsm, pgd) x 2 eps
    state = RunProgress()
    for event in everything:
        state.update(event)
    assert state.finished and state.round == state.rounds == 2 and state.remaining(events[-1]["t"]) == 0
