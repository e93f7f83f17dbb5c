"""Issue 13's attacks, replayed as a curious coordinator against the real ClientApp.

Every request is built as the SuperLink delivers it (tests/site_messages.py) and sent to
``fedaegis.client.app.app`` at a real PneumoniaMNIST site (a ``data-path``) or a simulated
one, under the site's own policy: the built-in defaults unless a test writes a file. Each
test shows the attack now fails: refused with a fixed code and a policy field, or its
answers no better than chance.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from flwr.app import MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedaegis.client import mods
from fedaegis.client.app import app
from fedaegis.client.classification_round import is_malicious
from fedaegis.client.site import evaluation_subset, site_data, site_ledger
from fedaegis.shared.run.config import RunConfig
from fedaegis.shared.reply.protocol import POLICY_REFUSAL, PROTOCOL_VIOLATION, SITE_ERROR, check_reply
from fedaegis.shared.site.policy import PolicyError, SitePolicy, check_request
from fedaegis.shared.models.tasks import build_task_model, model_meta

from fedaegis.tests.site_messages import ask

EPS = f"{8 / 255:.6g}"


@pytest.fixture(autouse=True)
def default_policy(monkeypatch, tmp_path):
    """The site's environment names no policy: the built-in defaults, state in a fresh folder."""
    monkeypatch.delenv("FEDAEGIS_SITE_POLICY", raising=False)
    monkeypatch.setenv("FEDAEGIS_HOME", str(tmp_path / "home"))
    torch.set_num_threads(1)


@pytest.fixture
def real_site(shared_data) -> dict:
    return {"data-path": str(shared_data / "pneumoniamnist" / "pneumoniamnist.npz")}


def _policy_file(tmp_path, text: str) -> str:
    path = tmp_path / "site-policy.toml"
    path.write_text(text)
    return str(path)


def _always(cls: int, **cfg) -> dict[str, torch.Tensor]:
    """The coordinator's model that predicts ``cls`` for every image (so a correct count is a label count)."""
    torch.manual_seed(0)
    state = build_task_model(model_meta(RunConfig(**cfg))).state_dict()
    state["head.weight"].zero_()
    state["head.bias"].copy_(torch.tensor([10.0, -10.0] if cls == 0 else [-10.0, 10.0]))
    return state


def _refused(reply, field: str) -> None:
    assert reply.has_error(), "the site answered a request its policy forbids"
    assert reply.error.code == POLICY_REFUSAL and reply.error.reason == f"site policy: {field}"


@pytest.mark.parametrize("request_cfg,field", [
    ({"min-cell-size": 0, "attacks": "fgsm", "attack-samples": 1}, "release.min-cell-size"),
    ({"min-cell-size": 1, "attacks": "fgsm", "attack-samples": 1}, "release.min-cell-size"),
    ({"attacks": "fgsm", "attack-samples": 1}, "release.min-eval-samples"),
    ({"defence-models": "none,pgd-at", "detector": "mahalanobis"}, "release.max-histogram-bins"),
    ({"metric-dp": "laplace", "metric-epsilon": 50.0, "metric-epsilon-budget": 50.0}, "dp.max-epsilon"),
])
def test_one_patient_evaluations_are_refused_before_data_is_read(real_site, request_cfg, field):
    """min-cell-size 0/1 with attack-samples 1 read one patient's label per reply (20 of 20)."""
    reply = ask(app, "evaluate", {**request_cfg, "epsilons": "8/255"}, real_site, _always(1))
    _refused(reply, field)


@pytest.mark.parametrize("request_cfg,field", [
    ({"labelled-fraction": 1e-6, "batch-size": 2, "optimizer": "sgd", "model": "lenet", "norm": "none"},
     "release.min-batch-size"),
    ({"labelled-fraction": 1e-6, "model": "lenet", "norm": "none"}, "release.min-train-samples"),
    ({"inversion-audit": "ig", "inversion-images": 1}, "release.min-cell-size"),
    ({"threat": "backdoor", "num-malicious": 0}, "allow.simulated-threats"),
    ({"dp-epsilon": 50.0}, "updates.max-dp-sgd-epsilon"),
])
def test_training_requests_that_would_leak_images_are_refused(real_site, request_cfg, field):
    """A two-image update rebuilt both X-rays (PSNR 21.9 dB); now no update of a handful leaves."""
    reply = ask(app, "train", {"local-epochs": 1, **request_cfg}, real_site)
    _refused(reply, field)


def test_threats_run_only_at_simulated_partitions():
    cfg = RunConfig(threat="backdoor", num_malicious=0)
    assert not is_malicious(cfg, {"data-path": "/data/cxr"})  # a real site never poisons itself
    assert not is_malicious(cfg, {"partition-id": 0, "num-partitions": 3})
    assert is_malicious(RunConfig(threat="backdoor", num_malicious=1), {"partition-id": 0, "num-partitions": 3})
    with pytest.raises(mods.Refusal):
        check_request(cfg, SitePolicy(), is_train=True, node_config={"data-path": "/data/cxr"})
    no_threats = SitePolicy(allow_simulated_threats=False)
    with pytest.raises(mods.Refusal, match="allow.simulated-threats"):
        check_request(cfg, no_threats, is_train=True, node_config={"partition-id": 0, "num-partitions": 3})


def test_differencing_k_and_k_plus_one_learns_nothing(real_site):
    """k and k+1 attack samples under one seed once differed by exactly one patient (208 of 208 labels).

    Now both requests get the site's fixed set of the same policy size, so their
    difference is DP noise only: the 'recovered' labels match the true labels of the
    samples the old prefix scheme would have added no better than always guessing the
    majority class.
    """
    data = site_data(RunConfig(), real_site).test
    cfg = RunConfig(attacks="fgsm", epsilons="8/255")
    for k in (40, 41, 63):
        assert torch.equal(evaluation_subset(data, k, cfg, real_site).images, evaluation_subset(data, 32, cfg, real_site).images)
    a = evaluation_subset(data, 64, cfg, real_site).images.flatten(1)
    b = evaluation_subset(data, 32, cfg, real_site).images.flatten(1)
    assert not torch.equal(a[:32], b)  # not a prefix: each size is its own draw from the site's secret
    guesses, truths = [], []
    # the old scheme: one permutation seeded by the server (seed, round 1, no partition id), prefixes of it
    old_order = torch.randperm(len(data), generator=torch.Generator().manual_seed(1_009))
    for k in range(40, 52):
        counts = []
        for samples in (k, k + 1):
            reply = ask(app, "evaluate", {"attacks": "fgsm", "epsilons": "8/255", "attack-samples": samples,
                                          "attack-rounds": "all"},  # a round-1 request: attacks in every round
                        real_site, _always(1))
            assert not reply.has_error()
            counts.append(reply.content["metrics"]["attack.clean.clean-correct"])
        guesses.append(int(counts[1] - counts[0] > 0))
        truths.append(int(data.labels[old_order[k]]))
    majority = max(np.mean(truths), 1 - np.mean(truths))
    assert np.mean(np.array(guesses) == np.array(truths)) <= majority + 0.25  # 12 pairs: chance, not 12 of 12


def test_reply_schema_withholds_the_three_encodings():
    """1000 per-sample keys, 200 labels in one name, 52 labels in the bits of a float: all withheld."""
    cfg = RunConfig()
    labels = np.random.default_rng(0).integers(0, 2, 200)
    per_sample = {"num-examples": 1000, **{f"sample-{i}-count": int(labels[i % 200]) for i in range(1000)}}
    in_name = {"num-examples": 200, "correct": 150, f"correct.{''.join(map(str, labels))}-count": 1}
    bits = int("".join(map(str, labels[:52])), 2)
    in_float = {"num-examples": 200, "correct": 150, "loss-sum": 100.0 + bits / 2**52}
    for leaky in (per_sample, in_name, in_float):
        problems = check_reply(RecordDict({"metrics": MetricRecord(leaky)}), is_train=False, request=cfg)
        assert problems, leaky
    assert any("release grid" in p for p in check_reply(RecordDict({"metrics": MetricRecord(in_float)}),
                                                          is_train=False, request=cfg))
    honest = {"num-examples": 200, "correct": 150, "loss-sum": 80.125, "skipped": 0, "suppressed-count": 0}
    assert check_reply(RecordDict({"metrics": MetricRecord(honest)}), is_train=False, request=cfg) == []


def test_the_guard_withholds_a_leaky_reply_with_a_fixed_reason(real_site):
    """The same encodings sent by site code behind fedaegis' mods never leave; the error carries no data."""
    leaky_app = ClientApp(mods=[mods.site_guard, mods.protocol_guard, mods.metric_dp, mods.cell_suppression])

    @leaky_app.evaluate()
    def evaluate(msg, context):
        from flwr.app import Message

        data = site_data(RunConfig(), context.node_config).test
        keys = {f"sample-{i}-count": int(y) for i, y in enumerate(data.labels[:1000].tolist())}
        return Message(RecordDict({"metrics": MetricRecord({"num-examples": len(data), **keys})}), reply_to=msg)

    reply = ask(leaky_app, "evaluate", {}, real_site)
    assert reply.has_error() and reply.error.code == PROTOCOL_VIOLATION and reply.error.reason == "privacy protocol"


def test_ledger_persists_and_the_coordinator_cannot_reset_or_raise_it(real_site, tmp_path):
    policy = _policy_file(tmp_path, f"[dp]\nmax-epsilon = 1.0\nlifetime-epsilon = 2.0\n"
                                    f"[site]\nstate-dir = '{tmp_path / 'state'}'\n")
    site = {**real_site, "policy": policy}
    for run in (1, 2):  # two runs: the budget lives on disk, not in one run's memory
        reply = ask(app, "evaluate", {"metric-dp": "laplace", "metric-epsilon": 1.0}, site, run_id=run)
        assert not reply.has_error() and reply.content["metrics"]["dp.epsilon-sum"] == pytest.approx(1.0)
    for request_cfg in ({"metric-dp": "laplace", "metric-epsilon-budget": 1e6},  # raise the budget
                        {"metric-dp": "none"}):  # switch DP off
        _refused(ask(app, "evaluate", request_cfg, site, run_id=3), "dp.lifetime-epsilon")
    book = site_ledger(site)
    assert [r.run for r in book.releases()] == ["1", "2"] and book.spent()[0] == pytest.approx(2.0)


def test_dp_cannot_be_switched_off_by_the_request(real_site):
    released = []
    for _ in range(6):
        metrics = ask(app, "evaluate", {"metric-dp": "none"}, real_site, _always(1)).content["metrics"]
        assert metrics["dp.epsilon-sum"] == pytest.approx(1.0) and metrics["loss-sum"] == 0.0  # unbounded: withheld
        assert metrics["num-examples"] == 624 and isinstance(metrics["correct"], int)
        released.append(metrics["correct"])
    assert len(set(released)) > 1 and abs(np.mean(released) - 390) < 10  # 390 pneumonia images, noised


def test_site_errors_leave_as_a_code_and_the_site_log_keeps_the_details(tmp_path, caplog):
    secret = tmp_path / "radiology" / "patient-archive"
    with caplog.at_level(logging.ERROR, logger="fedaegis.site"):
        reply = ask(app, "train", {"local-epochs": 1}, {"data-path": str(secret)})
    assert reply.error.code == SITE_ERROR and reply.error.reason == "site error"
    assert str(secret) in caplog.text  # the hospital's own log names it; the reply does not


def test_policy_file_mistakes_are_named(tmp_path):
    with pytest.raises(PolicyError, match="'release.min-cell-sise'"):
        SitePolicy.from_toml(_policy_file(tmp_path, "[release]\nmin-cell-sise = 5\n"))
    with pytest.raises(PolicyError, match="'dp.mechanism'"):
        SitePolicy.from_toml(_policy_file(tmp_path, "[dp]\nmechanism = 'exponential'\n"))
    with pytest.raises(PolicyError, match="'updates.mode'"):
        SitePolicy.from_toml(_policy_file(tmp_path, "[updates]\nmode = 3\n"))
    policy = SitePolicy.from_toml(_policy_file(tmp_path, "[release]\nmin-cell-size = 20\n[updates]\nmode = 'dp-sgd'\n"))
    assert policy.release_min_cell_size == 20
    with pytest.raises(mods.Refusal, match="updates.mode"):
        check_request(RunConfig(min_cell_size=20), policy, is_train=True, node_config={})


def test_the_hospital_reads_its_ledger(real_site, tmp_path):
    import json

    from typer.testing import CliRunner

    from fedaegis.orchestration.cli import app as cli

    policy = _policy_file(tmp_path, f"[dp]\nlifetime-epsilon = 1.5\n[site]\nstate-dir = '{tmp_path / 'state'}'\n")
    missing = CliRunner().invoke(cli, ["site", "ledger", "--policy", policy])
    assert missing.exit_code == 1 and "no ledger" in missing.output
    assert not ask(app, "evaluate", {}, {**real_site, "policy": policy}, run_id=42).has_error()
    res = CliRunner().invoke(cli, ["site", "ledger", "--policy", policy, "--json"])
    book = json.loads(res.stdout)
    assert res.exit_code == 0 and book["epsilon_spent"] == pytest.approx(1.0) and book["lifetime_epsilon"] == 1.5
    assert book["exhausted"] and [e["run"] for e in book["entries"]] == ["42"]
    text = CliRunner(env={"COLUMNS": "200"}).invoke(cli, ["site", "ledger", "--policy", policy]).stdout
    assert "budget spent: the site releases nothing more" in " ".join(text.split())  # however Rich wraps it
    bad = CliRunner().invoke(cli, ["site", "check", "--policy", _policy_file(tmp_path, "[dp]\nmax-epsilon = -1\n")])
    assert bad.exit_code == 2 and "'dp.max-epsilon'" in bad.output
