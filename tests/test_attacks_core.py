"""Every attack on a SmallCNN trained on real PneumoniaMNIST: effect, budgets, seeds, API."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from attack_fixtures import trained
from fedaegis.shared.attacks import (
    ATTACKS,
    DEFAULT_EPSILONS,
    AttackResult,
    ThreatModel,
    build_attack,
    evaluate_attacks,
    flatten_metrics,
)
from fedaegis.shared.attacks.base import attack_mode

TOL = 1e-5

# cheap but effective settings per attack: (params incl. threat fields)
CHEAP: dict[str, dict] = {
    "fgsm": {"eps": 8 / 255},
    "bim": {"eps": 8 / 255},
    "pgd": {"eps": 8 / 255},
    "mifgsm": {"eps": 8 / 255},
    "tifgsm": {"eps": 8 / 255},
    "cw": {"eps": 0.5, "steps": 30, "binary_steps": 3},
    "deepfool": {"eps": 0.5},
    "apgd": {"eps": 8 / 255, "steps": 10},
    "apgdt": {"eps": 8 / 255, "steps": 10},
    "fab": {"eps": 8 / 255, "steps": 10},
    "square": {"eps": 8 / 255, "n_queries": 100},
    "onepixel": {"eps": 1.0, "pixels": 3, "popsize": 16, "generations": 5},
    "universal": {"eps": 8 / 255, "epochs": 5},
    "watermark": {"eps": 0.3, "stride": 4},
    "fmn": {"eps": 8 / 255, "steps": 20},
    "autoattack": {"eps": 8 / 255, "apgd_steps": 10, "fab_steps": 10, "square_queries": 50},
    "autoattack-fast": {"eps": 8 / 255, "apgd_steps": 10, "fab_steps": 10, "square_queries": 50},
    "hopskipjump": {"eps": 8 / 255, "n_queries": 150, "budgets": [50]},
    "rays": {"eps": 8 / 255, "n_queries": 150, "budgets": [50]},
}


@pytest.fixture(scope="module")
def pneu():
    return trained("pneumonia")


def check_budget(x: torch.Tensor, x_adv: torch.Tensor, norm: str, eps: float) -> None:
    assert x_adv.shape == x.shape
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    d = (x_adv - x).flatten(1)
    if norm == "linf":
        assert float(d.abs().amax()) <= eps + TOL
    else:
        assert float(d.norm(dim=1).amax()) <= eps * (1 + TOL) + TOL


def check_counts(model, x, y, res: AttackResult) -> None:
    """The aggregate counts agree with the returned adversarial batch."""
    with torch.inference_mode():
        clean = model(x).argmax(1) == y
        robust = clean & (model(res.x_adv).argmax(1) == y)
    assert res.n == x.shape[0]
    assert res.clean_correct == int(clean.sum())
    assert res.robust_correct == int(robust.sum())
    assert 0 <= res.successes <= res.clean_correct


def test_registry_covers_the_issue():
    assert set(ATTACKS) == set(CHEAP)
    assert DEFAULT_EPSILONS == (1 / 255, 2 / 255, 4 / 255, 8 / 255)


@pytest.mark.parametrize("name", sorted(CHEAP))
def test_attack_lowers_accuracy_within_budget(pneu, name):
    model, x, y = pneu.model, pneu.x, pneu.y
    params = dict(CHEAP[name])
    before = copy.deepcopy(model.state_dict())
    model.train()  # the attack must use eval mode and restore this
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.grad = None
    atk = build_attack(name, **params)
    res = atk.attack(model, x, y)
    assert model.training
    model.eval()
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    check_budget(x, res.x_adv, atk.threat.norm, atk.threat.eps)
    check_counts(model, x, y, res)
    assert res.robust_correct < res.clean_correct, name
    if res.successes:
        eps = atk.threat.eps
        assert res.linf_sum / res.successes <= (eps if atk.threat.norm == "linf" else 1.0) + TOL
    assert res.queries > 0


@pytest.mark.parametrize("name", ["pgd", "apgd", "square", "onepixel", "fab", "universal"])
def test_seed_reproduces(pneu, name):
    x, y = pneu.x[:48], pneu.y[:48]
    params = dict(CHEAP[name])
    if name == "fab":
        params["restarts"] = 2
    if name == "pgd":
        params["restarts"] = 2
    a = build_attack(name, seed=3, **params).attack(pneu.model, x, y)
    b = build_attack(name, seed=3, **params).attack(pneu.model, x, y)
    assert torch.equal(a.x_adv, b.x_adv)
    assert a.counts() == b.counts()


@pytest.mark.parametrize("name,params", [
    ("pgd", {"norm": "l2", "eps": 0.5}),
    ("apgd", {"norm": "l2", "eps": 0.5, "steps": 10}),
    ("square", {"norm": "l2", "eps": 0.5, "n_queries": 100}),
    ("fab", {"norm": "l2", "eps": 0.5, "steps": 10}),
    ("fmn", {"norm": "l2", "eps": 0.5, "steps": 20}),
    ("deepfool", {"norm": "linf", "eps": 8 / 255}),
    ("universal", {"norm": "l2", "eps": 1.0, "epochs": 3}),
])
def test_other_norms(pneu, name, params):
    x, y = pneu.x[:64], pneu.y[:64]
    atk = build_attack(name, **params)
    res = atk.attack(pneu.model, x, y)
    check_budget(x, res.x_adv, params["norm"], params["eps"])
    check_counts(pneu.model, x, y, res)
    assert res.robust_correct < res.clean_correct


def test_early_stop_only_saves_work(pneu):
    x, y = pneu.x, pneu.y
    fast = build_attack("pgd", eps=4 / 255, seed=1).attack(pneu.model, x, y)
    full = build_attack("pgd", eps=4 / 255, seed=1, early_stop=False).attack(pneu.model, x, y)
    assert fast.robust_correct <= full.robust_correct
    assert fast.queries < full.queries
    assert fast.clean_correct == full.clean_correct


def test_fab_without_early_stop_keeps_shrinking_the_norm(pneu):
    x, y = pneu.x[:64], pneu.y[:64]
    fast = build_attack("fab", eps=8 / 255, steps=10, seed=1, early_stop=True).attack(pneu.model, x, y)
    full = build_attack("fab", eps=8 / 255, steps=10, seed=1).attack(pneu.model, x, y)  # the default
    assert fast.queries < full.queries
    assert full.robust_correct <= fast.robust_correct
    # minimum-norm behaviour: every sample runs all steps, so successes end up smaller
    assert full.linf_sum / max(full.successes, 1) < fast.linf_sum / max(fast.successes, 1)


def test_square_without_early_stop_spends_the_budget_on_every_sample(pneu):
    x, y = pneu.x[:64], pneu.y[:64]
    fast = build_attack("square", eps=4 / 255, n_queries=100, seed=1).attack(pneu.model, x, y)
    full = build_attack("square", eps=4 / 255, n_queries=100, seed=1, early_stop=False).attack(pneu.model, x, y)
    assert full.queries == 100 * full.clean_correct > fast.queries
    assert full.robust_correct <= fast.robust_correct
    check_budget(x, full.x_adv, "linf", 4 / 255)
    check_counts(pneu.model, x, y, full)


def test_restarts_keep_the_worst_case(pneu):
    x, y = pneu.x, pneu.y
    one = build_attack("pgd", eps=2 / 255, restarts=1, seed=5).attack(pneu.model, x, y)
    three = build_attack("pgd", eps=2 / 255, restarts=3, seed=5).attack(pneu.model, x, y)
    assert three.robust_correct <= one.robust_correct


def test_reuses_clean_logits(pneu):
    x, y = pneu.x, pneu.y
    with torch.inference_mode():
        logits = pneu.model(x)
    a = build_attack("bim", eps=4 / 255).attack(pneu.model, x, y, clean_logits=logits)
    b = build_attack("bim", eps=4 / 255).attack(pneu.model, x, y)
    assert a.counts() == b.counts()


def test_inputs_are_validated(pneu):
    atk = build_attack("fgsm")
    with pytest.raises(ValueError, match="x:"):
        atk.attack(pneu.model, pneu.x * 2, pneu.y)
    with pytest.raises(ValueError, match="y:"):
        atk.attack(pneu.model, pneu.x, pneu.y[:3])


def test_build_attack_errors_name_the_field():
    with pytest.raises(ValueError, match="^name:"):
        build_attack("nope")
    with pytest.raises(ValueError, match="^stepz:"):
        build_attack("pgd", stepz=3)
    with pytest.raises(ValueError, match="^steps:"):
        build_attack("pgd", steps=0)
    with pytest.raises(ValueError, match="^norm:"):
        build_attack("pgd", norm="l1")
    with pytest.raises(ValueError, match="^norm:"):
        build_attack("cw", norm="linf")
    with pytest.raises(ValueError, match="^eps:"):
        build_attack("pgd", eps=-1)
    with pytest.raises(ValueError, match="^eps:"):
        build_attack("pgd", eps=math.inf)
    with pytest.raises(ValueError, match="^target:"):
        build_attack("pgd", target=1)
    with pytest.raises(ValueError, match="^targeted:"):
        build_attack("deepfool", targeted=True)
    with pytest.raises(ValueError, match="^alpha:"):
        build_attack("watermark", eps=0.1, alpha=0.2)
    with pytest.raises(ValueError, match="^loss:"):
        build_attack("apgd", loss="hinge")
    with pytest.raises(ValueError, match="^target:"):
        build_attack("universal", targeted=True)
    atk = build_attack("cw", eps=1.0)
    assert atk.threat == ThreatModel(norm="l2", eps=1.0)


def test_minimum_norm_attacks_accept_unbounded_eps(pneu):
    x, y = pneu.x[:32], pneu.y[:32]
    res = build_attack("deepfool", eps=math.inf).attack(pneu.model, x, y)
    assert res.robust_correct == 0  # DeepFool always reaches a boundary eventually here
    assert res.l2_sum > 0


def test_targeted_pgd_hits_the_target(pneu):
    x, y = pneu.x, pneu.y
    res = build_attack("pgd", eps=8 / 255, targeted=True, target=1).attack(pneu.model, x, y)
    with torch.inference_mode():
        pred = pneu.model(res.x_adv).argmax(1)
    clean = pneu.model(x).argmax(1) == y
    assert res.successes == int((clean & (y != 1) & (pred == 1)).sum())
    assert res.successes > 0


def test_merge_sums_counts():
    a = AttackResult(torch.zeros(2, 1, 2, 2), 2, 2, 1, 1, 0.1, 0.2, 10, {"k": 1})
    b = AttackResult(torch.zeros(3, 1, 2, 2), 3, 1, 0, 1, 0.3, 0.4, 5, {"k": 2})
    m = a.merge(b)
    assert m.x_adv.shape[0] == 5
    assert m.counts() == {"n": 5, "clean_correct": 3, "robust_correct": 1, "successes": 2,
                          "linf_sum": pytest.approx(0.4), "l2_sum": pytest.approx(0.6),
                          "queries": 15, "k": 3}
    assert AttackResult.empty().merge(a).n == 2


def test_evaluate_attacks_returns_counts_only(pneu):
    x, y = pneu.x[:96], pneu.y[:96]
    suite = ["fgsm", {"name": "pgd", "steps": 5}, {"name": "fmn", "steps": 20},
             {"name": "deepfool", "label": "df-l2", "eps": [0.25, 0.5]}]
    eps = (2 / 255, 8 / 255)
    out = evaluate_attacks(pneu.model, (x, y), suite, eps, batch_size=40)
    assert set(out) == {("fgsm", e) for e in eps} | {("pgd", e) for e in eps} | \
        {("fmn", e) for e in eps} | {("df-l2", 0.25), ("df-l2", 0.5)}
    for key, fields in out.items():
        assert set(fields) == {"n", "clean_correct", "robust_correct", "successes",
                               "linf_sum", "l2_sum", "queries"}, key
        assert all(isinstance(v, (int, float)) for v in fields.values())
        assert fields["n"] == 96
        assert fields["robust_correct"] <= fields["clean_correct"]
    # batching does not change a deterministic attack's counts
    whole = build_attack("fgsm", eps=8 / 255).attack(pneu.model, x, y).counts()
    assert out[("fgsm", 8 / 255)]["robust_correct"] == whole["robust_correct"]
    assert out[("fgsm", 2 / 255)]["robust_correct"] >= out[("fgsm", 8 / 255)]["robust_correct"]
    flat = flatten_metrics(out)
    assert flat["fgsm/eps=0.0313725/n"] == 96


def test_evaluate_attacks_accepts_loaders(pneu):
    x, y = pneu.x[:64], pneu.y[:64]
    batches = [{"image": x[i:i + 16], "label": y[i:i + 16, None]} for i in range(0, 64, 16)]
    out = evaluate_attacks(pneu.model, batches, ["fgsm"], [4 / 255])
    ref = evaluate_attacks(pneu.model, (x, y), ["fgsm"], [4 / 255])
    assert out.keys() == ref.keys()
    for key in ref:  # counts agree exactly; float sums up to summation order
        assert out[key] == pytest.approx(ref[key], rel=1e-6)
    with pytest.raises(ValueError, match="^name:"):
        evaluate_attacks(pneu.model, (x, y), ["nope"])
    with pytest.raises(ValueError, match="^suite:"):
        evaluate_attacks(pneu.model, (x, y), [])


def test_attack_mode_restores_state(pneu):
    model = pneu.model
    model.train()
    with attack_mode(model):
        assert not model.training
        assert not any(p.requires_grad for p in model.parameters())
    assert model.training and all(p.requires_grad for p in model.parameters())
    model.eval()


def test_works_under_inference_mode(pneu):
    x, y = pneu.x[:16], pneu.y[:16]
    with torch.inference_mode():
        res = build_attack("pgd", eps=8 / 255, steps=3).attack(pneu.model, x, y)
    assert res.n == 16
