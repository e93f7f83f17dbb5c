"""Federated loss landscape (issue 19 item 3): per-cell sums from sites add up to the pooled surface,
the real ClientApp sends them only when asked and within their declared bound, a site's policy can
refuse them, and a simulated federation stores the surfaces and draws them in the report."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from attack_fixtures import trained
from site_messages import ask

from fedaegis.client.app import app
from fedaegis.shared.attacks.landscape import landscape_surface, loss_landscape
from fedaegis.shared.reply.protocol import POLICY_REFUSAL, check_metrics
from fedaegis.shared.reply.schema import check, release_form
from fedaegis.shared.results import BY_NAME, RoundTotals
from fedaegis.shared.results.landscape import LOSS_BOUND, decode
from fedaegis.shared.run.config import ConfigError, RunConfig

SITE = {"partition-id": 0, "num-partitions": 3}  # a simulated site of the embedded PneumoniaMNIST
ASK = {"landscape": True, "landscape-points": 3, "num-server-rounds": 1, "local-epochs": 2, "epsilons": "8/255"}


def test_landscape_sums_and_shape() -> None:
    t = trained("pneumonia")
    x, y = t.x[:96], t.y[:96]
    pooled = loss_landscape(t.model, (x, y), points=4)
    sites = [loss_landscape(t.model, (x[:48], y[:48]), points=4),
             loss_landscape(t.model, (x[48:], y[48:]), points=4)]
    assert all(check_metrics({"num-examples": 48, **s}) == [] for s in sites)
    summed = {k: sites[0][k] + sites[1][k] for k in sites[0]}
    surface = landscape_surface(summed)
    print("\nmean CE, rows: gradient sign 0..8/255, columns: random orthogonal 0..8/255\n", surface.numpy().round(3))
    assert surface.shape == (4, 4)
    # the gradient-sign axis is per image, so sites add up to the pooled column exactly
    assert torch.allclose(surface[:, 0], landscape_surface(pooled)[:, 0], rtol=1e-4)
    cells = decode(summed)["global"]
    assert all(cells[(i, 0)]["correct"] == decode(pooled)["global"][(i, 0)]["correct"] for i in range(4))
    with torch.no_grad():
        clean = F.cross_entropy(t.model.eval()(x), y)
    assert abs(float(surface[0, 0]) - float(clean)) < 1e-4
    assert surface[3, 0] > surface[0, 3] and surface[3, 0] > surface[0, 0] + 0.1


def test_each_images_loss_is_clipped_to_the_declared_bound() -> None:
    """A confidently wrong model's cross-entropy runs to hundreds of nats; each image adds at most the bound."""
    t = trained("pneumonia")
    x, y = t.x[:64], t.y[:64]
    wrong = torch.nn.Sequential(t.model, torch.nn.Linear(2, 2))
    with torch.no_grad():
        wrong[1].weight.copy_(torch.tensor([[0.0, 500.0], [500.0, 0.0]]))  # swap the classes, very sure
        wrong[1].bias.zero_()
        raw = F.cross_entropy(wrong.eval()(x), y, reduction="none")
    assert raw.max() > 10 * LOSS_BOUND
    sums = loss_landscape(wrong, (x, y), points=2)
    assert sums["landscape.global.i0.j0.loss-sum"] == pytest.approx(float(raw.clamp(max=LOSS_BOUND).sum()), rel=1e-5)
    cfg = RunConfig(landscape=True, landscape_points=2)
    assert check(release_form({"num-examples": 64, **sums}, cfg, False), cfg, False) == []
    over = release_form({"num-examples": 64, **sums, "landscape.global.i0.j0.loss-sum": float(raw.sum())}, cfg, False)
    assert any("exceeds its bound" in p for p in check(over, cfg, False))


def test_grid_size_and_task_are_checked() -> None:
    for points in (1, 12):
        with pytest.raises(ConfigError, match="landscape-points"):
            RunConfig(landscape=True, landscape_points=points)
    with pytest.raises(ConfigError, match="'landscape'.*classification"):
        RunConfig.from_flower({"landscape": True, "task": "segmentation"})


@pytest.fixture(scope="module")
def site_model() -> dict[str, torch.Tensor]:
    """The global model after one round at a simulated site (the real ClientApp's training)."""
    torch.set_num_threads(1)
    reply = ask(app, "train", ASK, SITE)
    assert not reply.has_error()
    return reply.content["arrays"].to_torch_state_dict()


def test_site_sends_the_landscape_sums_asked_for(site_model) -> None:
    cfg = {**ASK, "attack-samples": 0}  # the whole test split: its clean loss is the reply's own
    reply = ask(app, "evaluate", cfg, SITE, site_model)
    assert not reply.has_error()
    metrics = dict(reply.content["metrics"])
    assert check(metrics, RunConfig.from_flower(cfg), False) == []  # what the site's guard let through
    n = metrics["num-examples"]
    cells = decode(metrics)["global"]
    assert sorted(cells) == [(i, j) for i in range(3) for j in range(3)]
    assert all(c["n-count"] == n for c in cells.values())
    # (0, 0) is the unperturbed image: the clean evaluation's loss and accuracy
    assert cells[(0, 0)]["loss-sum"] == pytest.approx(metrics["loss-sum"], abs=2e-3)
    assert cells[(0, 0)]["correct"] == metrics["correct"]
    surface = landscape_surface(metrics)
    print("\nsite's mean loss, rows: sign(grad) 0..8/255, columns: random 0..8/255\n", surface.numpy().round(3))
    along = surface[:, 0]
    assert along[0] < along[1] < along[2] and along[2] > along[0] + 0.05  # uphill along the gradient's sign
    assert surface[2, 0] > surface[0, 2]  # steeper than the random direction


def test_not_asked_not_sent(site_model) -> None:
    plain = dict(ask(app, "evaluate", {**ASK, "landscape": False}, SITE, site_model).content["metrics"])
    assert not any(k.startswith("landscape.") for k in plain)
    # an earlier round than the attack rounds ask for (attack-rounds = final): nothing either
    early = dict(ask(app, "evaluate", {**ASK, "num-server-rounds": 3}, SITE, site_model).content["metrics"])
    assert not any(k.startswith("landscape.") for k in early)
    sent = dict(ask(app, "evaluate", {**ASK, "attack-samples": 32}, SITE, site_model).content["metrics"])
    problems = check(sent, RunConfig.from_flower({**ASK, "landscape": False}), False)
    assert any("landscape.global.i0.j0.loss-sum" in p and "not a key this request asked for" in p for p in problems)
    # a cell the request's grid does not have may not leave either
    assert check({**sent, "landscape.global.i3.j0.correct": 0}, RunConfig.from_flower(ASK), False)


def test_policy_can_refuse_the_landscape(site_model, tmp_path) -> None:
    policy = tmp_path / "site-policy.toml"
    policy.write_text("[release]\nmin-cell-size = 0\neval-sizes = []\n[dp]\nrequired = false\n"
                      "[allow]\nlandscape = false\n")
    site = {**SITE, "policy": str(policy)}
    refused = ask(app, "evaluate", ASK, site, site_model)
    assert refused.has_error() and refused.error.code == POLICY_REFUSAL
    assert refused.error.reason == "site policy: allow.landscape"
    assert not ask(app, "evaluate", {**ASK, "landscape": False}, site, site_model).has_error()


def test_defence_members_side_by_side() -> None:
    """In a defence comparison each member (standard and hardened) has its own surface."""
    cfg = {**ASK, "local-epochs": 1, "defence-models": "none,fast-fgsm", "attack-samples": 32}
    state = ask(app, "train", cfg, SITE).content["arrays"].to_torch_state_dict()
    reply = ask(app, "evaluate", cfg, SITE, state)
    assert not reply.has_error()
    metrics = dict(reply.content["metrics"])
    assert check(metrics, RunConfig.from_flower(cfg), False) == []
    by_model = decode(metrics)
    assert set(by_model) == {"none", "fast-fgsm"}
    assert all(c["n-count"] == 32 for cells in by_model.values() for c in cells.values())
    rows = BY_NAME["landscape"].rows(RoundTotals(RunConfig.from_flower(cfg), None, metrics))
    cells = BY_NAME["landscape"].cells([{"name": r.name, "value": r.value, "attack": r.attack,
                                         "epsilon": r.epsilon} for r in rows])
    assert [c["model"] for c in cells] == ["none", "fast-fgsm"]  # the standard model first
    for c in cells:
        assert c["epsilon"] == pytest.approx(8 / 255) and len(c["loss_grid"]) == 3
        surface = landscape_surface(metrics, c["model"])
        assert c["gradient_loss"] == pytest.approx(float(surface[2, 0]))


@pytest.mark.slow
def test_federated_landscape_is_stored_audited_and_drawn(tmp_path) -> None:
    """3 simulated sites, 2 rounds, every reply audited; the final round's surface is stored and drawn."""
    from typer.testing import CliRunner

    from fedaegis.orchestration.audit import run_audit
    from fedaegis.orchestration.cli import app as cli
    from fedaegis.orchestration.report import build_report, report_html
    from fedaegis.shared.store import RunStore

    db = f"sqlite:///{tmp_path / 'runs.db'}"
    result = run_audit(sites=3, rounds=2, overrides={"landscape": True, "landscape-points": 3, "attack-samples": 32},
                       db_url=db, num_cpus=2)
    assert result.passed, result.reasons()
    run = RunStore(db).get_run(result.run_uuid)
    first, last = run["rounds"]
    assert not [r for r in first["metric_rows"] if r.get("family") == "landscape"]  # attack-rounds = final
    cells = BY_NAME["landscape"].cells([r for r in last["metric_rows"] if r.get("family") == "landscape"])
    assert [c["model"] for c in cells] == ["global"]
    (cell,) = cells
    assert cell["n_count"] == 96 and cell["points"] == 3  # 32 images at each of 3 sites
    assert all(v is not None and 0 <= v <= LOSS_BOUND for row in cell["loss_grid"] for v in row)
    assert cell["gradient_loss"] > cell["clean_loss"]
    report = build_report(run)["landscape"]
    assert report["measured"] and report["models"] == ["global"] and report["final_round"] == 2
    page = report_html(run)
    section = page[page.index('<section id="landscape">'):]
    section = section[:section.index("</section>")]
    assert section.count('<img class="plot" src="data:image/png;base64,') == 1 and "loss (eps,0)" in section
    shown = CliRunner(env={"COLUMNS": "200"}).invoke(cli, ["show", result.run_uuid, "--db-url", db])
    assert shown.exit_code == 0 and "loss landscape" in shown.stdout and "global" in shown.stdout
    as_json = json.loads(CliRunner().invoke(cli, ["show", result.run_uuid, "--db-url", db, "--json"]).stdout)
    assert as_json["rounds"][-1]["landscape"][0]["loss_grid"] == cell["loss_grid"]
