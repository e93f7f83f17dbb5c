"""Many simulated sites: the Ray actor pool is bounded, and 100 hospitals run to completion."""

from __future__ import annotations

import pytest

from fedaegis.orchestration.simulation import SimulationResources, plan_actors, simulate
from fedaegis.shared.store import RunStore

G = 2**30


@pytest.mark.parametrize(
    ("nodes", "cpus", "memory", "sites", "expected"),
    [
        ([(2, 10 * G)], 1.0, 0, 100, (1.0, 2)),  # 100 sites, 2 actors: memory does not grow with sites
        ([(2, 10 * G)], 1.0, 0, 1, (2.0, 1)),  # never more actors than sites
        ([(16, 64 * G)], 1.0, 0, 3, (5.3333, 3)),  # 3 x 5.3333 fits 16 CPUs, and Flower counts 3
        ([(16, 10 * G)], 1.0, 3 * G, 100, (5.3333, 3)),  # 3 actors of 3 GB fit 10 GB
        ([(16, 10 * G), (4, 1 * G)], 1.0, 2 * G, 100, (4.0001, 3)),  # the small node hosts none
        ([(2, 10 * G)], 0.5, 0, 100, (0.5, 4)),
    ],
)
def test_actor_pool_fits_cpus_memory_and_sites(nodes, cpus, memory, sites, expected):
    per_actor, actors = plan_actors(nodes, cpus, memory, sites)
    assert (per_actor, actors) == expected
    # what Flower will start (int(CPUs / num_cpus) per node) is what Ray can place
    assert sum(int(cpu / per_actor) for cpu, _ in nodes) == actors
    for cpu, mem in nodes:
        assert int(cpu / per_actor) * per_actor <= cpu and int(cpu / per_actor) * memory <= mem


def test_whole_cpus_for_flowers_simulation_runtime():
    """Flower's federation config takes whole CPUs per site: the plan keeps to them."""
    assert plan_actors([(16, 64 * G)], 1.0, 0, 3, whole=True) == (5.0, 3)
    assert plan_actors([(16, 10 * G)], 1.0, 3 * G, 100, whole=True) == (5.0, 3)
    assert plan_actors([(2, 10 * G)], 1.0, 0, 1, whole=True) == (2.0, 1)
    with pytest.raises(ValueError, match="whole CPUs per site, got 0.5"):
        plan_actors([(2, 10 * G)], 0.5, 0, 100, whole=True)


def test_fractional_client_cpus_are_refused_before_anything_starts(tmp_path):
    with pytest.raises(ValueError, match="--client-cpus 0.5: Flower's Simulation Runtime reserves whole CPUs"):
        simulate({"db-url": f"sqlite:///{tmp_path / 'runs.db'}"}, num_sites=2,
                 resources=SimulationResources(num_cpus=2, client_cpus=0.5))
    assert not (tmp_path / "runs.db").exists()


def test_no_node_fits_is_a_clear_error():
    with pytest.raises(ValueError, match="no Ray node can host a site with 1.0 CPUs and 2048 MB"):
        plan_actors([(2, 1 * G)], 1.0, 2 * G, 10)


@pytest.mark.slow
def test_hundred_sites(tmp_path):
    """100 sites on 2 actors; PneumoniaMNIST's 624 test images give each site 6 or 7, so the
    default min-cell-size (10) would withhold every site's evaluation: 5 lets them count."""
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    run_uuid = simulate(
        {"num-server-rounds": 1, "local-epochs": 1, "db-url": db, "min-cell-size": 5},
        num_sites=100, resources=SimulationResources(num_cpus=2),
    )
    run = RunStore(db).get_run(run_uuid)
    assert run["status"] == "completed" and run["config"]["num-sites"] == 100
    (rnd,) = run["rounds"]
    assert rnd["train_replies"] == 100 and rnd["evaluate_replies"] == 100 and rnd["failures"] == 0
    m = rnd["metrics"]
    assert m["train.num-examples"] == 4708 and m["evaluate.num-examples"] == 624  # every sample, once
    assert m["evaluate.suppressed-count"] == 0 and 0 < m["evaluate.accuracy"] <= 1
