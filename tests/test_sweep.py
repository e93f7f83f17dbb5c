"""``fedaegis sweep``: validation naming the field, stable point hashes, resume, and a real tiny sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedaegis.orchestration.cli import app
from fedaegis.orchestration.sweep import SweepConfigError, build_sweep, load_sweep
from fedaegis.orchestration.sweep_run import run_sweep
from fedaegis.shared.store import RunStore

runner = CliRunner()

TINY = """
[sweep]
name = "tiny"
num-sites = 2
parallel = 2
cpus-per-run = 1

[config]
num-server-rounds = 1
local-epochs = 1
attack-samples = 8

[grid]
seed = [0, 1]
"""


def _doc(**tables):
    doc = {"sweep": {"name": "t", "num-sites": 2}, "config": {"num-server-rounds": 1}, "grid": {"seed": [0, 1]}}
    for name, table in tables.items():
        doc[name] = table if table is None else {**doc.get(name, {}), **table}
    return {k: v for k, v in doc.items() if v is not None}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (_doc(extra={"x": 1}), "unknown table or key 'extra'"),
        (_doc(sweep={"parallell": 2}), "[sweep] 'parallell': unknown option"),
        (_doc(sweep={"parallel": "2"}), "[sweep] 'parallel' = '2': expected int"),
        (_doc(sweep={"num-sites": 0}), "[sweep] 'num-sites' = 0: must be >= 1"),
        (_doc(sweep={"client-cpus": 2.0}), "[sweep] 'client-cpus' = 2.0: must be a whole number in [1, cpus-per-run]"),
        (_doc(sweep={"client-cpus": 0.5}), "[sweep] 'client-cpus' = 0.5: must be a whole number"),
        (_doc(sweep={"client-gpus": 1.5}), "[sweep] 'client-gpus' = 1.5: must be a share of one GPU"),
        (_doc(config={"learning-rat": 0.1}), "[config] 'learning-rat': unknown run-config key"),
        (_doc(config={"run-name": "x"}), "[config] 'run-name': set by the sweep"),
        (_doc(grid={"modle": ["cnn"]}), "[grid] 'modle': unknown run-config key"),
        (_doc(grid={"model": []}), "[grid] 'model': needs a non-empty list"),
        (_doc(grid={"model": "cnn"}), "[grid] 'model': needs a non-empty list"),
        (_doc(grid={"seed": [0, 0]}), "[grid] 'seed': value 0 is listed twice"),
        (_doc(grid={"db-url": ["sqlite://"]}), "[grid] 'db-url': cannot vary"),
        (_doc(grid={"num-server-rounds": [1, 2]}), "[grid] 'num-server-rounds': also set in [config]"),
        (_doc(grid=None), "[grid]: needs at least one run-config key"),
        # values are checked by RunConfig, point by point, with the field named
        (_doc(grid={"partitioning": ["iid", "random"]}), "grid point 2 (seed=0 partitioning=random): run config 'partitioning'"),
        (_doc(grid={"learning-rate": [0.1, "fast"]}), "run config 'learning-rate' = 'fast': expected float"),
        (_doc(grid={"dataset": ["/nonexistent/data.npz"]}), "run config 'dataset' /nonexistent/data.npz: file not found"),
        (_doc(config={"min-sites": 3}), "run config 'min-sites' = 3 exceeds [sweep] num-sites"),
    ],
)
def test_invalid_sweeps_name_the_field(doc, message):
    with pytest.raises(SweepConfigError) as exc:
        build_sweep(doc, db_url="sqlite://")
    assert message in str(exc.value)


def test_grid_expands_with_stable_hashes():
    plan = build_sweep(_doc(grid={"partitioning": ["iid", "dirichlet"]}), db_url="sqlite://")
    assert [p.values for p in plan.points] == [
        {"seed": 0, "partitioning": "iid"}, {"seed": 0, "partitioning": "dirichlet"},
        {"seed": 1, "partitioning": "iid"}, {"seed": 1, "partitioning": "dirichlet"},
    ]
    assert len({p.config_hash for p in plan.points}) == 4
    assert plan.points[0].config["in-channels"] == 1 and "db-url" not in plan.points[0].config
    # The same runs, written differently (key order, a default spelt out, another name): the same hashes.
    again = build_sweep({"grid": {"partitioning": ["iid", "dirichlet"], "seed": [0, 1]},
                         "config": {"model": "cnn", "num-server-rounds": 1},
                         "sweep": {"num-sites": 2, "name": "other"}}, db_url="sqlite://")
    assert {p.config_hash for p in again.points} == {p.config_hash for p in plan.points}
    three_sites = build_sweep(_doc(sweep={"num-sites": 3}), db_url="sqlite://")
    assert not {p.config_hash for p in three_sites.points} & {p.config_hash for p in plan.points}


def test_resume_skips_only_completed_runs(db_url):
    plan = build_sweep(_doc(grid={"seed": [0, 1, 2]}), db_url=db_url)
    store = RunStore(db_url)
    p1, p2, p3 = plan.points
    for ref, (point, status) in enumerate(((p1, "completed"), (p2, "failed"), (p3, "running")), start=1):
        run_id = store.create_run(uuid=f"u{ref}", name=point.run_name("t"), config={}, num_rounds=1)
        if status != "running":  # 'running': left behind by a crashed sweep
            store.finish_run(run_id, status=status)
    other = store.create_run(uuid="u9", name=p2.run_name("another-sweep"), config={}, num_rounds=1)
    store.finish_run(other)
    results = run_sweep(plan, dry_run=True)
    assert [(r.status, r.run_id) for r in results] == [("skipped", 1), ("pending", None), ("pending", None)]


def test_cli_refuses_a_bad_file_and_dry_runs(tmp_path, db_url):
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY.replace("seed = [0, 1]", "seed = []"))
    res = runner.invoke(app, ["sweep", str(bad), "--db-url", db_url])
    assert res.exit_code == 2 and "[grid] 'seed'" in res.output
    res = runner.invoke(app, ["sweep", str(tmp_path / "missing.toml")])
    assert res.exit_code == 2 and "does not exist" in res.output
    good = tmp_path / "tiny.toml"
    good.write_text(TINY)
    res = runner.invoke(app, ["sweep", str(good), "--db-url", db_url, "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "2 pending" in res.stdout and RunStore(db_url).list_runs() == []
    res = runner.invoke(app, ["sweep", str(good), "--db-url", db_url, "--dry-run", "--json"])
    doc = json.loads(res.stdout)
    assert doc["schema"] == 1 and [p["status"] for p in doc["points"]] == ["pending", "pending"]


def test_example_sweep_file_is_valid():
    example = Path(__file__).resolve().parents[1] / "examples" / "sweep.toml"
    plan = load_sweep(example, db_url="sqlite://")
    assert len(plan.points) >= 4 and plan.options.name


@pytest.mark.slow
def test_tiny_sweep_runs_then_resumes(tmp_path, db_url, small_pneumonia):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY.replace("[config]\n", f"[config]\ndataset = '{small_pneumonia}'\n"))
    res = runner.invoke(app, ["sweep", str(config), "--db-url", db_url])
    assert res.exit_code == 0, res.output
    assert "2 completed, 0 skipped, 0 failed" in res.stdout, res.stdout
    runs = RunStore(db_url).list_runs()
    plan = load_sweep(config, db_url)
    assert sorted(r["name"] for r in runs) == sorted(p.run_name("tiny") for p in plan.points)
    assert all(r["status"] == "completed" and r["rounds_completed"] == 1 for r in runs)
    shown = json.loads(runner.invoke(app, ["show", str(runs[0]["id"]), "--db-url", db_url, "--json"]).stdout)
    assert shown["config"]["local-epochs"] == 1 and shown["rounds"][0]["sites"] == 2

    res = runner.invoke(app, ["sweep", str(config), "--db-url", db_url])
    assert res.exit_code == 0, res.output
    assert "0 completed, 2 skipped, 0 failed" in res.stdout, res.stdout
    assert len(RunStore(db_url).list_runs()) == 2


def test_client_gpus_are_reserved_per_run_and_checked_against_this_machine():
    """[sweep] client-gpus: each point's Ray task reserves its sites' shares; no GPU here: refused at load."""
    import torch

    from fedaegis.orchestration.sweep import SweepOptions

    assert SweepOptions("s", num_sites=2, client_gpus=0.25).gpus_per_run == 0.5
    assert SweepOptions("s", num_sites=3, client_gpus=0.5).gpus_per_run == 2.0  # Ray: whole GPUs above one
    assert SweepOptions("s", num_sites=3).gpus_per_run == 0.0
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: a share of it is accepted")
    with pytest.raises(SweepConfigError) as exc:
        build_sweep(_doc(sweep={"client-gpus": 0.25}))
    assert str(exc.value).startswith("[sweep] 'client-gpus' = 0.25: this machine has 0 CUDA GPU(s)")
