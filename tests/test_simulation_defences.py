"""End to end on real BloodMNIST: a federated defence comparison (members none and PGD-AT),
a federated Mahalanobis detector and detector-gated routing, in a real Flower simulation.

Two simulated hospitals hold IID shares of a BloodMNIST subset; every round each
trains both members (plain and PGD-AT at 8/255) and evaluates them, the detector,
the router and the ensemble on its own images, replying with counts only.

The CNN uses BatchNorm: the GroupNorm variant, trained this briefly, is oddly robust
already (PGD-10 robust accuracy 0.2-0.26 at 8/255 with clean 0.7), which leaves
PGD-AT little to add; the BatchNorm one is brittle (about 0.02), as a standard model is.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
from flwr.app import ArrayRecord, MessageType, MetricRecord

from fedaegis.orchestration.simulation import SimulationResources, simulate
from fedaegis.server.audit import AuditingGrid
from fedaegis.shared.reply.protocol import is_aggregate_name
from fedaegis.shared.store import RunStore

pytestmark = pytest.mark.slow

EPS = 8 / 255
SITES, N_TRAIN, N_TEST = 2, 3000, 480  # per site: 1500 training, 240 test images (120 attacked, 120 calibrate)
ATTACKED = 120
RUN = {
    "num-server-rounds": 2, "local-epochs": 3, "batch-size": 32, "learning-rate": 1e-3,
    "model": "cnn", "norm": "batch", "in-channels": 3, "num-classes": 8,
    "defence-models": "none,pgd-at", "hardening-eps": EPS, "hardening-steps": 3,
    "detector": "mahalanobis", "detector-fpr": 0.1, "router-hardened": "pgd-at",
    "epsilons": "8/255", "attack-samples": ATTACKED, "min-sites": SITES,
}


@pytest.fixture(scope="module")
def defence_run(shared_data, tmp_path_factory):
    """One federated run; the BloodMNIST subset is a seeded sample of the real file."""
    tmp = tmp_path_factory.mktemp("defences")
    full = np.load(shared_data / "bloodmnist" / "bloodmnist.npz")
    rng = np.random.default_rng(0)
    subset = {}
    for split, n in (("train", N_TRAIN), ("val", 64), ("test", N_TEST)):
        idx = np.sort(rng.permutation(len(full[f"{split}_labels"]))[:n])
        subset[f"{split}_images"], subset[f"{split}_labels"] = full[f"{split}_images"][idx], full[f"{split}_labels"][idx]
    np.savez(tmp / "blood.npz", **subset)
    db = f"sqlite:///{tmp / 'runs.db'}"
    grids: list[AuditingGrid] = []

    def wrap(grid):
        grids.append(AuditingGrid(grid))
        return grids[-1]

    threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # the Ray actors inherit it: no oversubscribed cores
    start = time.monotonic()
    try:
        run_uuid = simulate({**RUN, "dataset": str(tmp / "blood.npz"), "db-url": db, "run-name": "defences"},
                            num_sites=SITES, resources=SimulationResources(num_cpus=2), wrap_grid=wrap)
    finally:
        if threads is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = threads
    print(f"\nfederated defence comparison: {time.monotonic() - start:.0f} s")
    return RunStore(db), run_uuid, grids[0], db


def _cells(rnd: dict) -> dict[tuple[str, str], dict]:
    from fedaegis.orchestration.results_view import defence_cells

    return {(c["threat"], c["system"]): c for c in defence_cells(rnd) if c["epsilon"] == pytest.approx(EPS, rel=1e-4)}


def _final(defence_run) -> dict:
    store, run_uuid, *_ = defence_run
    run = store.get_run(run_uuid)
    assert run["status"] == "completed"
    return run["rounds"][-1]


def test_every_round_stores_the_hardening_table(defence_run):
    store, run_uuid, *_ = defence_run
    rounds = store.get_run(run_uuid)["rounds"]
    assert [r["number"] for r in rounds] == [1, 2]
    for rnd in rounds:
        cells = _cells(rnd)
        assert {("white-box", "none"), ("white-box", "pgd-at"), ("transfer", "none"), ("transfer", "pgd-at"),
                ("transfer", "routed"), ("adaptive", "routed"), ("adaptive", "ensemble")} <= set(cells)
        for cell in cells.values():
            assert cell["n_count"] == SITES * ATTACKED  # every site attacked ATTACKED of its test images
            assert 0.0 <= cell["robust_accuracy"] <= cell["clean_accuracy"] <= 1.0


def test_federated_pgd_at_raises_robust_accuracy(defence_run):
    cells = _cells(_final(defence_run))
    std, hard = cells[("white-box", "none")], cells[("white-box", "pgd-at")]
    print("\nPGD-10 at 8/255, white-box: standard clean %.3f robust %.3f; PGD-AT clean %.3f robust %.3f"
          % (std["clean_accuracy"], std["robust_accuracy"], hard["clean_accuracy"], hard["robust_accuracy"]))
    assert std["clean_accuracy"] > 0.6
    assert hard["robust_accuracy"] >= std["robust_accuracy"] + 0.30


def test_federated_mahalanobis_detects_pgd(defence_run):
    from fedaegis.shared.results.query import cells

    (cell,) = [c for c in cells(_final(defence_run), "detection") if c["epsilon"] == pytest.approx(EPS, rel=1e-4)]
    print("\nfederated Mahalanobis ROC AUC at 8/255: %.3f (%d clean, %d adversarial)"
          % (cell["roc_auc"], cell["clean_count"], cell["adv_count"]))
    assert cell["detector"] == "mahalanobis" and cell["adv_count"] > 0
    assert cell["roc_auc"] >= 0.90


def test_routing_against_transferred_and_adaptive_attacks(defence_run):
    """The survey's claim: the routed system keeps the standard model's clean accuracy and, against
    attacks crafted on the standard model, reaches the hardened model's robust accuracy."""
    cells = _cells(_final(defence_run))
    std, hard, routed = (cells[("transfer", s)] for s in ("none", "pgd-at", "routed"))
    hardened_robust = cells[("white-box", "pgd-at")]["robust_accuracy"]  # the hardening table's figure
    adaptive, ensemble = cells[("adaptive", "routed")], cells[("adaptive", "ensemble")]
    print("\ntransfer from the standard model at 8/255 (clean / robust): standard %.3f / %.3f, PGD-AT %.3f / %.3f, "
          "routed %.3f / %.3f (routed: %.3f clean, %.3f adversarial); adaptive: routed %.3f / %.3f, ensemble %.3f / %.3f"
          % (std["clean_accuracy"], std["robust_accuracy"], hard["clean_accuracy"], hard["robust_accuracy"],
             routed["clean_accuracy"], routed["robust_accuracy"], routed["clean_routed_fraction"],
             routed["adv_routed_fraction"], adaptive["clean_accuracy"], adaptive["robust_accuracy"],
             ensemble["clean_accuracy"], ensemble["robust_accuracy"]))
    # Only the clean images the detector routes (its false positives: detector-fpr 0.1, measured 0.07-0.20)
    # can change answer, and the hardened model gets most of them right too: measured losses of 5 to 9 of
    # 240 (0.021-0.038) across sessions (each session's sites draw new evaluation sets). So: at most half
    # of the routed share lost, and never below the weaker member's own clean accuracy.
    lost = std["clean_accuracy"] - routed["clean_accuracy"]
    assert lost <= 0.5 * routed["clean_routed_fraction"] + 0.01
    assert routed["clean_accuracy"] >= min(std["clean_accuracy"], hard["clean_accuracy"]) - 0.03
    # Transferred attacks are weaker than white-box ones, so the routed figure may exceed the white-box
    # one (e.g. 129 vs 111 of 240): "reaches" is one-sided; the upper bound is PGD-AT's transfer figure below.
    assert routed["robust_accuracy"] >= hardened_robust - 0.05
    assert routed["robust_accuracy"] >= std["robust_accuracy"] + 0.20
    # transferred inputs the detector misses stay with the standard model: below PGD-AT's own transfer figure
    assert routed["robust_accuracy"] <= hard["robust_accuracy"] + 0.02
    # detector-fpr 0.1, a conformal cut on each site's 120 held-out images, counted on its 120 evaluated ones:
    # the fraction is 0.099 +- 0.027 across draws (measured 0.07-0.20 across sessions); 0.25 is exceeded
    # with probability below 1e-5 (simulated: tests/test_hardening_api.py has the cut's guarantee).
    assert routed["clean_routed_fraction"] <= 0.25
    assert adaptive["clean_accuracy"] == pytest.approx(routed["clean_accuracy"])  # the same router, clean inputs
    assert 0.0 <= adaptive["robust_accuracy"] <= adaptive["clean_accuracy"]


def test_every_reply_holds_only_aggregates(defence_run):
    _, _, grid, _ = defence_run
    assert len(grid.replies) == 2 * 2 * SITES
    assert grid.violations == []
    for reply in grid.replies:
        assert not reply.has_error()
        is_train = reply.metadata.message_type == MessageType.TRAIN
        assert set(reply.content.keys()) == ({"arrays", "metrics"} if is_train else {"metrics"})
        metrics = reply.content["metrics"]
        assert isinstance(metrics, MetricRecord)
        for name, value in metrics.items():
            assert isinstance(value, int | float) and not isinstance(value, list), name
            assert is_aggregate_name(name), name
        if is_train:
            arrays = reply.content["arrays"]
            assert isinstance(arrays, ArrayRecord)
            assert {k.split(".")[1] for k in arrays} == {"none", "pgd-at"}  # members.<method>.<parameter>
            assert all(tuple(a.shape[-2:]) != (28, 28) for a in arrays.values())
        else:  # detector scores leave only as fixed-bin histograms: counts summing to the scored inputs
            bins = [k for k in metrics if "-bin" in k]
            assert bins and all(k.startswith("detector.mahalanobis.") and k.endswith("-count") for k in bins)


def test_show_prints_the_tables(defence_run):
    from typer.testing import CliRunner

    from fedaegis.orchestration.cli import app

    _, run_uuid, _, db = defence_run
    res = CliRunner().invoke(app, ["show", run_uuid, "--db-url", db])
    assert res.exit_code == 0, res.output
    assert "hardening and defences" in res.stdout and "ROC AUC" in res.stdout and "routed" in res.stdout
    res = CliRunner().invoke(app, ["show", run_uuid, "--db-url", db, "--json"])
    last = json.loads(res.stdout)["rounds"][-1]
    assert {c["system"] for c in last["defences"]} == {"none", "pgd-at", "routed", "ensemble"}
    assert last["detection"][0]["detector"] == "mahalanobis" and 0 <= last["detection"][0]["roc_auc"] <= 1
