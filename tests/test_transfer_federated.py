"""Transfer attacks in the federation (run config ``transfer``), on the real ClientApp and embedded PneumoniaMNIST.

Two simulated sites train round 1 from one initial model; their FedAvg is the global model. Site 0
crafts PGD on the model it sent (kept in its Context state) and on the global model, and scores
each on both; only counts leave, they fit the reply schema, and a site policy can forbid it.
"""

from __future__ import annotations

import pytest
import torch
from flwr.app import Context, RecordDict
from typer.testing import CliRunner

from fedaegis.client.app import app
from fedaegis.client.site import evaluation_subset, site_data
from fedaegis.client.transfer import evaluate_transfer, keep_sent_model
from fedaegis.shared.models.tasks import build_task_model, model_meta
from fedaegis.shared.reply.protocol import POLICY_REFUSAL, check_reply
from fedaegis.shared.reply.schema import check
from fedaegis.shared.results import BY_NAME
from fedaegis.shared.results.transfer import decode
from fedaegis.shared.run.config import RunConfig

from fedaegis.tests.site_messages import request

EPS = f"{8 / 255:.6g}"
REQUEST = {"transfer": True, "epsilons": "8/255", "attack-samples": 64, "local-epochs": 1, "num-server-rounds": 1}
SITES = 3


def _site(pid: int) -> dict:
    return {"partition-id": pid, "num-partitions": SITES}


def _context(pid: int) -> Context:
    return Context(run_id=1, node_id=pid + 1, node_config=_site(pid), state=RecordDict(), run_config={})


@pytest.fixture(scope="module")
def federation() -> tuple[dict[str, torch.Tensor], list[Context], list[dict[str, torch.Tensor]]]:
    """Round 1: sites 0 and 1 train from one initial model (their contexts keep what they sent); FedAvg."""
    torch.set_num_threads(1)
    cfg = RunConfig.from_flower(REQUEST)
    torch.manual_seed(0)
    initial = build_task_model(model_meta(cfg)).state_dict()
    contexts, sent = [_context(0), _context(1)], []
    for ctx in contexts:
        reply = app(request("train", REQUEST, initial), ctx)
        assert not reply.has_error(), reply.error
        sent.append(reply.content["arrays"].to_torch_state_dict())
    global_state = {k: (sent[0][k].double() + sent[1][k].double()).div(2).to(sent[0][k].dtype) for k in sent[0]}
    return global_state, contexts, sent


def test_site_keeps_the_model_it_sent_and_the_white_box_diagonal_dominates(federation):
    global_state, contexts, sent = federation
    cfg = RunConfig.from_flower(REQUEST)
    global_model = build_task_model(model_meta(cfg))
    global_model.load_state_dict(global_state)
    data = evaluation_subset(site_data(cfg, _site(0)).test, cfg.attack_samples, cfg, _site(0))
    torch.manual_seed(1)
    counts = evaluate_transfer(global_model, cfg, data, contexts[0], 1, seed=3)
    n = len(data)
    assert n == 64 and counts["transfer.global.n-count"] == counts["transfer.local.n-count"] == n
    cells = decode(counts)
    assert set(cells) == {(s, t, float(EPS)) for s in ("local", "global") for t in ("local", "global")}
    for (src, tgt, _), cell in cells.items():
        assert cell["n-count"] == n and 0 <= cell["fooled-count"] <= cell["clean-correct"] <= n, (src, tgt, cell)
    white, transferred = cells[("global", "global", float(EPS))], cells[("local", "global", float(EPS))]
    print(f"\nPGD-{cfg.attack_pgd_steps} at 8/255 on 64 images, global model: white-box fools "
          f"{white['fooled-count']:.0f}/{white['clean-correct']:.0f}, from the site's local model "
          f"{transferred['fooled-count']:.0f}/{transferred['clean-correct']:.0f}")
    assert white["clean-correct"] > n / 2
    assert white["fooled-count"] >= transferred["fooled-count"] > 0  # white-box strongest, yet the local one carries
    # the kept model is the one the site sent, and a site that did not train this round measures nothing
    stored = contexts[0].state["transfer-local-model"].to_torch_state_dict()
    assert all(torch.equal(stored[k], sent[0][k]) for k in sent[0])
    idle = evaluate_transfer(global_model, cfg, data, _context(2), 1, seed=3)
    assert set(idle) == set(counts) and not any(idle.values())
    stale = evaluate_transfer(global_model, cfg, data, contexts[0], 2, seed=3)  # round 2: not this round's model
    assert not any(stale.values())


def test_reply_fits_the_schema_and_only_a_transfer_request_gets_transfer_keys(federation):
    global_state, contexts, _ = federation
    cfg = RunConfig.from_flower(REQUEST)
    reply = app(request("evaluate", REQUEST, global_state), contexts[1])
    assert not reply.has_error(), reply.error
    metrics = dict(reply.content["metrics"])
    transfer = {k: v for k, v in metrics.items() if k.startswith("transfer.")}
    counts = [k for k in transfer if not k.endswith("suppressed-count")]  # 2 per model, 2 per (source, target)
    assert len(counts) == 2 * 2 + 4 * 2 and transfer["transfer.local.global.eps=" + EPS + ".n-count"] == 64
    assert check(metrics, cfg, is_train=False) == []
    assert check_reply(reply.content, is_train=False, request=cfg) == []  # what `fedaegis audit` checks
    # the same reply is refused for a request that did not ask for transfer
    plain = RunConfig.from_flower({**REQUEST, "transfer": False})
    assert any("transfer." in p for p in check(metrics, plain, is_train=False))
    reply = app(request("evaluate", {**REQUEST, "transfer": False}, global_state), contexts[1])
    assert not reply.has_error() and not any(k.startswith("transfer.") for k in reply.content["metrics"])


def test_a_defence_comparison_scores_its_members_against_each_other(federation):
    """With defence-models the members are the models (no local one needed); the reply's keys name them."""
    _, _, sent = federation
    cfg = RunConfig.from_flower({**REQUEST, "defence-models": "none,fast-fgsm"})
    torch.manual_seed(0)
    members = build_task_model(model_meta(cfg))
    data = evaluation_subset(site_data(cfg, _site(2)).test, 32, cfg, _site(2))
    counts = evaluate_transfer(members, cfg, data, _context(2), 1, seed=3)
    names = ("none", "fast-fgsm")
    assert {(s, t) for s, t, _ in decode(counts)} == {(s, t) for s in names for t in names}
    assert counts["transfer.none.n-count"] == 32 and check({**counts, "num-examples": 32}, cfg, is_train=False) == []
    assert check({**counts, "num-examples": 32}, RunConfig.from_flower(REQUEST), is_train=False)  # not local/global
    # through the ClientApp: the defence comparison's reply carries the members' matrix and fits the schema
    ask = {**REQUEST, "defence-models": "none,fast-fgsm", "attack-samples": 32}
    reply = app(request("evaluate", ask, members.state_dict()), _context(2))
    assert not reply.has_error(), reply.error
    assert reply.content["metrics"]["transfer.fast-fgsm.none.eps=" + EPS + ".n-count"] == 32
    assert check_reply(reply.content, is_train=False, request=RunConfig.from_flower(ask)) == []
    ctx = _context(2)
    keep_sent_model(ctx, RunConfig.from_flower(REQUEST), 1, sent[0])
    assert "transfer-local-model" in ctx.state
    keep_sent_model(ctx, cfg, 1, sent[0])  # a defence comparison keeps no model of its own
    assert "transfer-local-model" not in ctx.state


def test_a_site_whose_policy_forbids_transfer_refuses(tmp_path, monkeypatch):
    policy = tmp_path / "site-policy.toml"
    policy.write_text("[allow]\ntransfer = false\n[dp]\nrequired = false\n")
    monkeypatch.setenv("FEDAEGIS_HOME", str(tmp_path / "home"))
    ctx = Context(run_id=1, node_id=9, node_config={**_site(0), "policy": str(policy)}, state=RecordDict(),
                  run_config={})
    for kind in ("train", "evaluate"):
        reply = app(request(kind, REQUEST), ctx)
        assert reply.has_error() and reply.error.code == POLICY_REFUSAL
        assert reply.error.reason == "site policy: allow.transfer"
    assert not app(request("evaluate", {**REQUEST, "transfer": False}), ctx).has_error()


@pytest.mark.slow  # a 3-site Ray simulation: about 3 minutes on 2 cores
def test_a_simulated_run_stores_the_transfer_matrix_and_show_prints_it(db_url):
    from fedaegis.orchestration.cli import app as cli
    from fedaegis.orchestration.report_content import build_report
    from fedaegis.orchestration.report_html import report_html
    from fedaegis.orchestration.simulation import SimulationResources, simulate
    from fedaegis.server.audit import AuditingGrid
    from fedaegis.shared.store import RunStore

    grids: list[AuditingGrid] = []

    def wrap(grid):
        grids.append(AuditingGrid(grid))
        return grids[-1]

    run_uuid = simulate({"num-server-rounds": 2, "db-url": db_url, "local-epochs": 1, "transfer": True,
                         "attack-rounds": "all", "epsilons": "8/255", "attack-samples": 32},
                        num_sites=SITES, resources=SimulationResources(num_cpus=2), wrap_grid=wrap)
    assert grids[0].violations == []
    run = RunStore(db_url).get_run(run_uuid)
    for rnd in run["rounds"]:  # every site trained and measured: 3 x 32 images behind each cell
        rows = [r for r in rnd["metric_rows"] if r["family"] == "transfer"]
        pairs = {r["attack"] for r in rows}
        assert pairs == {"local->local", "local->global", "global->local", "global->global"}
        n = {r["attack"]: r["value"] for r in rows if r["name"] == "n-count"}
        assert set(n.values()) == {SITES * 32}
        rate = {r["attack"]: r["value"] for r in rows if r["name"] == "success-rate"}
        assert 0 < rate["local->global"] <= 1 and rate["global->global"] >= rate["local->global"]
    shown = CliRunner().invoke(cli, ["show", run_uuid, "--db-url", db_url])
    assert shown.exit_code == 0, shown.output
    assert "transfer attacks" in shown.output and "local" in shown.output and "global" in shown.output
    print("\n" + shown.output)
    section = build_report(run)["transfer"]
    assert section["measured"] and {c["pair"] for c in section["final"]} == pairs
    html = report_html(run)
    assert "Transfer attacks" in html and BY_NAME["transfer"].absent not in html


@pytest.mark.slow  # a 3-site Ray simulation with secure aggregation: about 2 minutes on 2 cores
def test_a_site_that_did_not_train_sends_zeros_under_secure_aggregation(db_url):
    """Two of three sites train; all three evaluate with the same (masked) names, the idle one as zeros."""
    from flwr.app import MessageType

    from fedaegis.orchestration.simulation import SimulationResources, simulate
    from fedaegis.server.audit import AuditingGrid
    from fedaegis.shared.store import RunStore

    grids: list[AuditingGrid] = []
    run_uuid = simulate({"num-server-rounds": 1, "db-url": db_url, "local-epochs": 1, "transfer": True,
                         "epsilons": "8/255", "attack-samples": 32, "fraction-train": 0.67,
                         "secure-aggregation": True},
                        num_sites=SITES, resources=SimulationResources(num_cpus=2),
                        wrap_grid=lambda g: grids.append(AuditingGrid(g)) or grids[-1])
    (rnd,) = RunStore(db_url).get_run(run_uuid)["rounds"]
    assert rnd["train_replies"] == 2 and rnd["evaluate_replies"] == SITES and grids[0].violations == []
    names = [set(r.content["metrics"]) for r in grids[0].replies if r.metadata.message_type == MessageType.EVALUATE]
    assert len(names) == SITES and names[0] == names[1] == names[2]
    assert "secagg.transfer.local.global.eps=" + EPS + ".fooled-count" in names[0]
    rows = {(r["attack"], r["name"]): r["value"] for r in rnd["metric_rows"] if r["family"] == "transfer"}
    assert rows[("local->global", "n-count")] == 2 * 32  # only the two sites that trained measured
    assert 0 < rows[("local->global", "fooled-count")] <= rows[("local->global", "clean-correct")]
