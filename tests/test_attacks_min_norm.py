"""Minimum-norm attacks (C&W, FAB, FMN): ``eps=inf`` works, a finite ``eps`` only decides
success (the search is not cut short), and the norms found are no larger than torchattacks'
on the same images at the same budget (tolerance: 2%, success no lower)."""

from __future__ import annotations

import pytest
import torch

from attack_fixtures import trained
from fedaegis.shared.attacks import build_attack

INF = float("inf")
NORM_TOL = 1.02


@pytest.fixture(scope="module")
def pneu():
    return trained("pneumonia")


@pytest.fixture(scope="module")
def blood():
    return trained("blood")


def outcome(model, x, y, x_adv, norm):
    """Per sample: fooled (clean-correct and misclassified) and perturbation norm."""
    x_adv = torch.as_tensor(x_adv)
    with torch.inference_mode():
        fooled = (model(x).argmax(1) == y) & (model(x_adv).argmax(1) != y)
    d = (x_adv - x).flatten(1)
    return fooled, d.abs().amax(1) if norm == "linf" else d.norm(dim=1)


@pytest.mark.parametrize("name,params", [
    ("cw", {"norm": "l2", "binary_steps": 2, "steps": 20}),
    ("fab", {"norm": "linf", "steps": 10}),
    ("fab", {"norm": "l2", "steps": 10}),
    ("fmn", {"norm": "linf", "steps": 20}),
    ("fmn", {"norm": "l2", "steps": 20}),
])
def test_eps_inf_minimises_and_finite_eps_only_decides_success(pneu, name, params):
    """At eps=inf every sample gets an adversarial; at a finite eps the very same search runs,
    so successes are exactly the samples whose minimum norm is within eps, with the same norms."""
    x, y = pneu.x[:32], pneu.y[:32]
    free = build_attack(name, eps=INF, **params).attack(pneu.model, x, y)
    fooled, norms = outcome(pneu.model, x, y, free.x_adv, params["norm"])
    assert free.successes == int(fooled.sum()) == free.clean_correct > 0
    eps = float(norms[fooled].median())  # about half the samples are within it
    capped = build_attack(name, eps=eps, **params).attack(pneu.model, x, y)
    inside = fooled & (norms <= eps)
    assert capped.successes >= int(inside.sum()) > 0
    # the points within eps are returned unchanged: same norms as the unbounded search
    same = torch.isclose(capped.x_adv[inside], free.x_adv[inside]).flatten(1).all(1)
    assert bool(same.all())


@pytest.mark.parametrize("dataset", ["pneumonia", "blood"])
def test_cw_oracle(dataset):
    """Equal Adam steps: torchattacks' C&W at one c (it has no binary search) against ours
    searching c over two rounds of half the steps."""
    ta = pytest.importorskip("torchattacks")
    t = trained(dataset)
    model, x, y = t.model, t.x[:32], t.y[:32]
    mine = build_attack("cw", eps=INF, binary_steps=2, steps=25, c_init=1.0).attack(model, x, y)
    fm, nm = outcome(model, x, y, mine.x_adv, "l2")
    ft, nt = outcome(model, x, y, ta.CW(model, c=1.0, steps=50, lr=0.01)(x, y), "l2")
    both = fm & ft
    assert int(fm.sum()) >= int(ft.sum()) and int(both.sum()) > 0
    assert float(nm[both].mean()) <= NORM_TOL * float(nt[both].mean())


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_oracle(blood, norm):
    """8 classes, every wrong class as a target (torchattacks' multi-targeted FAB stops at the
    first target that succeeds within its eps; ours keeps searching for a smaller one)."""
    ta = pytest.importorskip("torchattacks")
    model, x, y = blood.model, blood.x[:24], blood.y[:24]
    mine = build_attack("fab", norm=norm, eps=INF, steps=10, n_target_classes=7).attack(model, x, y)
    fm, nm = outcome(model, x, y, mine.x_adv, norm)
    theirs = ta.FAB(model, norm="Linf" if norm == "linf" else "L2", eps=1.0 if norm == "linf" else 100.0,
                    steps=10, n_classes=8, multi_targeted=True, seed=0)(x, y)
    ft, nt = outcome(model, x, y, theirs, norm)
    both = fm & ft
    assert int(fm.sum()) >= int(ft.sum()) and int(both.sum()) > 0
    assert float(nm[both].mean()) <= NORM_TOL * float(nt[both].mean())


def test_early_stop_only_saves_work(pneu):
    """early_stop=True is the robust-accuracy shortcut: same successes, fewer queries, larger norms."""
    x, y = pneu.x[:32], pneu.y[:32]
    full = build_attack("cw", eps=0.3, binary_steps=2, steps=20).attack(pneu.model, x, y)
    fast = build_attack("cw", eps=0.3, binary_steps=2, steps=20, early_stop=True).attack(pneu.model, x, y)
    assert fast.queries < full.queries
    assert fast.successes == full.successes > 0
    assert fast.l2_sum > full.l2_sum
