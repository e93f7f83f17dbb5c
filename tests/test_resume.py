"""Resuming a run whose server died: refusals, crash-consistent checkpoints, true round numbers.

The fast tests drive :class:`RunRecorder` and :func:`resume_point` on a real database; the slow
one SIGKILLs a real ``fedaegis simulate`` (with its Ray) after round 1 and resumes it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord

from fedaegis.server.app import RunRecorder
from fedaegis.server.recording import RecordingStrategy
from fedaegis.server.resume import ResumeError, pending_path, resume_point
from fedaegis.shared.run.config import RunConfig
from fedaegis.shared.store import RunStore
from fedaegis.shared.store.schema import utcnow
from fedaegis.shared.models.tasks import build_task_model, model_meta

from flower_processes import BIN, flower_env, kill_tree

RUN_TIMEOUT_S = 240


def _run_with_rounds(db_url: str, rounds: int, **config) -> tuple[RunStore, int, RunRecorder]:
    """A stored 3-round run with ``rounds`` rounds recorded the way the server records them."""
    from fedaegis.server.recording import RoundOutcome

    cfg = RunConfig.from_flower({"num-server-rounds": 3, "db-url": db_url, "run-uuid": f"u{rounds}",
                                 "num-sites": 2, **config})
    store = RunStore(db_url)
    run_id = store.create_run(uuid=cfg.run_uuid, name="r", num_rounds=3,
                              config={k: v for k, v in cfg.to_flower().items() if k != "db-url"})
    recorder = RunRecorder(store, run_id, cfg.run_uuid, cfg)
    for n in range(1, rounds + 1):
        torch.manual_seed(n)
        model = build_task_model(model_meta(cfg))
        recorder(RoundOutcome(number=n, started_at=utcnow(), arrays=ArrayRecord(model.state_dict()),
                              evaluate_metrics=MetricRecord({"num-examples": 20, "correct": 10}),
                              train_replies=2, evaluate_replies=2))
    return store, run_id, recorder


def test_resume_point_loads_the_verified_last_model(db_url):
    store, run_id, recorder = _run_with_rounds(db_url, 2)
    point = resume_point(store, str(run_id), db_url)
    assert point.done == 2 and point.first_round == 3 and point.run_id == run_id
    assert point.cfg.resume_run == str(run_id) and point.cfg.run_uuid == "u2" and point.cfg.num_sites == 2
    torch.manual_seed(2)
    expected = build_task_model(model_meta(point.cfg)).state_dict()
    got = point.arrays.to_torch_state_dict()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert not pending_path(recorder.checkpoint).exists()


def test_refusals_name_the_reason(db_url):
    store, run_id, recorder = _run_with_rounds(db_url, 1)
    blob = recorder.checkpoint.read_bytes()
    recorder.checkpoint.write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))  # one bit flipped
    with pytest.raises(ResumeError, match="does not match the SHA-256 recorded with round 1"):
        resume_point(store, "u1", db_url)
    recorder.checkpoint.unlink()
    with pytest.raises(ResumeError, match="is missing"):
        resume_point(store, "u1", db_url)
    recorder.checkpoint.write_bytes(blob)
    assert resume_point(store, "u1", db_url).done == 1
    store.finish_run(run_id, status="completed")
    with pytest.raises(ResumeError, match="already completed"):
        resume_point(store, "u1", db_url)


def test_metric_dp_runs_are_resumed(db_url):
    """The sites' budgets live in their own ledgers, not in the server's run: nothing to refuse."""
    store, _, _ = _run_with_rounds(db_url, 1, **{"metric-dp": "laplace"})
    point = resume_point(store, "u1", db_url)
    assert point.done == 1 and point.cfg.metric_dp == "laplace"


def test_a_crash_between_commit_and_rename_is_rolled_forward(db_url):
    store, run_id, recorder = _run_with_rounds(db_url, 2)
    ckpt, pending = recorder.checkpoint, pending_path(recorder.checkpoint)
    # round 2 committed, its model still in <checkpoint>.next, round 1's model in place
    store2, _, rec1 = _run_with_rounds(db_url.replace("runs.db", "other.db"), 1)
    shutil.copy(ckpt, pending)
    shutil.copy(rec1.checkpoint, ckpt)
    assert resume_point(store, str(run_id), db_url).done == 2
    assert not pending.exists()
    # a model written for a round the crash kept out of the database is dropped
    shutil.copy(rec1.checkpoint, pending)
    assert resume_point(store, str(run_id), db_url).done == 2 and not pending.exists()


def test_a_run_that_never_stored_a_round_is_refused_unless_interrupted(db_url):
    store, run_id, _ = _run_with_rounds(db_url, 0)
    with pytest.raises(ResumeError, match="never stored a round"):
        resume_point(store, str(run_id), db_url)
    store.finish_run(run_id, status="interrupted")  # Ctrl-C during round 1: start over from the seeded model
    point = resume_point(store, str(run_id), db_url)
    assert point.done == 0 and point.arrays is None


class _Inner:
    """A strategy stand-in that records the round numbers it is given."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def configure_train(self, server_round, arrays, config, grid):
        self.seen.append(("configure_train", server_round))
        return []

    def aggregate_train(self, server_round, replies):
        self.seen.append(("aggregate_train", server_round))
        return None, None

    def configure_evaluate(self, server_round, arrays, config, grid):
        self.seen.append(("configure_evaluate", server_round))
        return []

    def aggregate_evaluate(self, server_round, replies):
        self.seen.append(("aggregate_evaluate", server_round))
        return None


def test_resumed_rounds_carry_their_true_numbers():
    """Flower's loop counts 1, 2; the strategy (which puts it in the sites' config, their seed),
    the recorder and the database see 2, 3."""
    inner, recorded = _Inner(), []
    rec = RecordingStrategy(inner, lambda outcome: recorded.append(outcome.number), first_round=2)
    arrays = ArrayRecord(build_task_model(model_meta(RunConfig())).state_dict())
    for local in (1, 2):
        rec.configure_train(local, arrays, ConfigRecord(), None)
        rec.aggregate_train(local, [])
        rec.configure_evaluate(local, arrays, ConfigRecord(), None)
        rec.aggregate_evaluate(local, [])
    assert recorded == [2, 3]
    assert {n for _, n in inner.seen} == {2, 3}


def test_site_seed_depends_on_the_round():
    from flwr.app import Context, RecordDict

    from fedaegis.client.app import _seed

    ctx = Context(run_id=1, node_id=1, node_config={"partition-id": 1}, state=RecordDict(), run_config={})
    assert len({_seed(RunConfig(), r, ctx) for r in (1, 2, 3)}) == 3


# -- end to end -----------------------------------------------------------------------------

def _cli(args: list[str], env: dict, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "fedaegis"), *args], env=env, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, **kw)


def _in_process(args: list[str]):
    from typer.testing import CliRunner

    from fedaegis.orchestration.cli import app

    return CliRunner().invoke(app, args)


def test_resume_refusals_through_the_cli(db_url):
    _run_with_rounds(db_url, 1, **{"metric-dp": "gaussian"})
    res = _in_process(["simulate", "--resume", "u1", "--db-url", db_url, "--model", "resnet10", "-c", "seed=3"])
    assert res.exit_code == 2 and "--model, --config cannot change it" in " ".join(res.output.split()), res.output
    res = _in_process(["simulate", "--resume", "nope", "--db-url", db_url])
    assert res.exit_code == 2 and "no run 'nope'" in res.output


def test_resume_refuses_another_site_policy(db_url, tmp_path, monkeypatch):
    """A resumed run's sites go on under the policy it started with: another file is refused."""
    from fedaegis.orchestration.simulation import record_site_policy

    monkeypatch.setenv("FEDAEGIS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FEDAEGIS_SITE_POLICY")  # the built-in policy

    _run_with_rounds(db_url, 1)
    strict = tmp_path / "strict.toml"
    strict.write_text("[release]\nmin-cell-size = 20\n")
    record_site_policy("u1", None)  # what simulate records when the run starts under the built-in policy
    res = _in_process(["simulate", "--resume", "u1", "--db-url", db_url, "--site-policy", str(strict)])
    assert res.exit_code == 2 and "--site-policy: run u1 started under another site policy" in " ".join(
        res.output.split()), res.output
    with pytest.raises(ValueError, match="another site policy"):
        record_site_policy("u1", str(strict))
    commented = tmp_path / "same.toml"  # the same fields, written differently: the same policy
    commented.write_text("# the built-in floors\n[release]\n")
    record_site_policy("u1", str(commented))


@pytest.fixture
def ray_tmp():
    path = Path(tempfile.mkdtemp(prefix="frs-", dir="/tmp"))  # short: Ray's socket paths
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _ledger_charges(env: dict) -> dict[int, list[tuple[str, int, str, float]]]:
    """Each simulated site's ledger: (Flower run, round, kind, epsilon) of every release charged."""
    from fedaegis.shared.site.ledger import PrivacyLedger

    home = Path(env["FEDAEGIS_HOME"]) / "site"
    return {i: [(r.run, r.round, r.kind, r.epsilon) for r in PrivacyLedger(home / f"simulated-{i}-of-2").releases()]
            for i in range(2)}


@pytest.mark.slow
def test_killed_server_is_resumed(tmp_path, ray_tmp):
    """Under metric DP too: the sites' ledgers carry their spending across the resume."""
    env = flower_env(tmp_path / "state", ray_tmp)
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(
        [str(BIN / "fedaegis"), "simulate", "--sites", "2", "--rounds", "3", "--local-epochs", "1",
         "--attacks", "", "--db-url", db, "--name", "crashy", "-c", "metric-dp=laplace", "-c", "metric-epsilon=0.5"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while time.monotonic() < deadline and first.poll() is None:
            runs = RunStore(db).list_runs() if (tmp_path / "runs.db").exists() else []
            if runs and runs[0]["rounds_completed"] >= 1:
                break
            time.sleep(0.3)
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        kill_tree(first.pid)  # the server, its Ray and the sites die at once
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            kill_tree(first.pid)
        log.close()

    store = RunStore(db)
    (summary,) = store.list_runs()
    run_id, uuid = summary["id"], summary["uuid"]
    crashed = store.get_run(run_id)
    assert crashed["status"] == "running"
    assert [r["number"] for r in crashed["rounds"]] in ([1], [1, 2])
    # (this also completes a checkpoint rename the kill may have interrupted)
    assert resume_point(store, uuid, db).done == len(crashed["rounds"])
    done = len(crashed["rounds"])
    before = _ledger_charges(env)

    # the stored configuration cannot be changed, a modified checkpoint is refused (before Ray starts)
    res = _in_process(["simulate", "--resume", uuid, "--db-url", db, "--rounds", "5"])
    assert res.exit_code == 2 and "--rounds cannot change it" in " ".join(res.output.split()), res.output
    ckpt = Path(crashed["checkpoint_path"])
    blob = ckpt.read_bytes()
    ckpt.write_bytes(blob + b"\0")
    res = _in_process(["simulate", "--resume", uuid, "--db-url", db])
    assert res.exit_code == 2 and "does not match the SHA-256" in " ".join(res.output.split()), res.output
    ckpt.write_bytes(blob)

    res = _cli(["simulate", "--resume", str(run_id), "--db-url", db, "--json"], env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "sha256 verified" in " ".join(res.stderr.split())
    shown = json.loads(res.stdout)
    assert shown["id"] == run_id and shown["status"] == "completed" and shown["name"] == "crashy"
    assert [r["round"] for r in shown["rounds"]] == [1, 2, 3]
    assert all(r["sites"] == 2 and r["failures"] == 0 for r in shown["rounds"])
    assert shown["rounds"][0]["accuracy"] == crashed["rounds"][0]["metrics"]["evaluate.accuracy"]

    # metric DP: each site's ledger still holds what it spent before the crash (no reset) and
    # the resumed run is charged only for rounds after the stored ones (no second charge for them)
    after = _ledger_charges(env)
    for site in range(2):
        assert after[site][:len(before[site])] == before[site]
        first_run = {run for run, *_ in before[site]}
        resumed = [(rnd, kind, eps) for run, rnd, kind, eps in after[site][len(before[site]):]]
        assert len(first_run) == 1 and not {run for run, *_ in after[site][len(before[site]):]} & first_run
        assert {(rnd, kind) for rnd, kind, _ in resumed if kind != "train-update"} == {
            (rnd, kind) for rnd in range(done + 1, 4) for kind in ("train", "evaluate")}
        assert all(eps == pytest.approx(0.5) for _, kind, eps in resumed if kind != "train-update")
        assert all(rnd > done for _, rnd, _, _ in after[site][len(before[site]):])

    from fedaegis.shared.models.checkpoint import load_checkpoint

    _, meta = load_checkpoint(store.checkpoint_path(uuid))  # sha256 checked against the database
    assert meta["round"] == 3

    res = _in_process(["simulate", "--resume", uuid, "--db-url", db])
    assert res.exit_code == 2 and "already completed (3/3 rounds)" in " ".join(res.output.split()), res.output
