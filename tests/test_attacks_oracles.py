"""Oracle tests: on the same trained model, batch and budget, our attacks leave robust
accuracy no higher than torchattacks' and ART's (tolerance: 1 point).

All torchattacks 3.5.1 attacks used here import without torchvision. ART's
AutoAttack imports ``multiprocess`` even when it runs serially; if that package
is missing a stub is registered (only its parallel mode would use it).
"""

from __future__ import annotations

import sys
import types
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from attack_fixtures import trained
from fedaegis.shared.attacks import build_attack

ta = pytest.importorskip("torchattacks")
art_cls = pytest.importorskip("art.estimators.classification")
E = pytest.importorskip("art.attacks.evasion")

TOL = 0.01
EPS = 2 / 255
L2 = 0.3

warnings.filterwarnings("ignore", module="art")


def robust(model, x, y, x_adv, l2_eps: float | None = None) -> float:
    """Robust accuracy; for minimum-norm outputs only perturbations within ``l2_eps`` count."""
    x_adv = torch.as_tensor(x_adv)
    with torch.inference_mode():
        clean = model(x).argmax(1) == y
        ok = clean & (model(x_adv).argmax(1) == y)
        if l2_eps is not None:
            ok = clean & (ok | ((x_adv - x).flatten(1).norm(dim=1) > l2_eps * (1 + 1e-6)))
    return float(ok.float().mean())


def art_clf(model, x, classes):
    return art_cls.PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(),
                                     input_shape=tuple(x.shape[1:]), nb_classes=classes,
                                     clip_values=(0.0, 1.0))


@pytest.fixture(scope="module")
def pneu():
    t = trained("pneumonia")
    return t.model, t.x, t.y, art_clf(t.model, t.x, 2)


def ours(name, model, x, y, **params) -> float:
    return build_attack(name, **params).attack(model, x, y).robust_accuracy


def test_fgsm(pneu):
    model, x, y, clf = pneu
    mine = ours("fgsm", model, x, y, eps=EPS)
    assert mine <= robust(model, x, y, ta.FGSM(model, eps=EPS)(x, y)) + TOL
    assert mine <= robust(model, x, y, E.FastGradientMethod(clf, eps=EPS).generate(x.numpy(), y.numpy())) + TOL
    assert mine < robust(model, x, y, x)


def test_pgd(pneu):
    model, x, y, clf = pneu
    mine = ours("pgd", model, x, y, eps=EPS, steps=10, alpha=EPS / 4)
    theirs = robust(model, x, y, ta.PGD(model, eps=EPS, alpha=EPS / 4, steps=10, random_start=True)(x, y))
    assert mine <= theirs + TOL
    # ART's PGD starts at the input by default: compare with our PGD without random start
    mine_det = ours("pgd", model, x, y, eps=EPS, steps=10, alpha=EPS / 4, random_start=False)
    art = E.ProjectedGradientDescent(clf, eps=EPS, eps_step=EPS / 4, max_iter=10, num_random_init=0,
                                     verbose=False)
    assert mine_det <= robust(model, x, y, art.generate(x.numpy(), y.numpy())) + TOL


def test_cw(pneu):
    model, x, y, clf = pneu
    x, y = x[:64], y[:64]
    # torchattacks has no binary search: same single c and step count
    mine = ours("cw", model, x, y, eps=L2, binary_steps=1, steps=120, c_init=1.0)
    assert mine <= robust(model, x, y, ta.CW(model, c=1.0, steps=120, lr=0.01)(x, y), L2) + TOL
    # equal model evaluations: ART's iterations each run a learning-rate line search of up to
    # 5 forward passes (max_halving=2, max_doubling=2), so ours gets 2x its iterations
    mine = ours("cw", model, x, y, eps=L2, binary_steps=3, steps=40, c_init=1.0)
    art = E.CarliniL2Method(clf, binary_search_steps=3, max_iter=20, initial_const=1.0,
                            learning_rate=0.01, max_halving=2, max_doubling=2, batch_size=64,
                            verbose=False)
    assert mine <= robust(model, x, y, art.generate(x.numpy(), y.numpy()), L2) + TOL


def test_deepfool(pneu):
    model, x, y, clf = pneu
    x, y = x[:96], y[:96]
    mine = ours("deepfool", model, x, y, eps=L2, steps=50, overshoot=0.02)
    assert mine <= robust(model, x, y, ta.DeepFool(model, steps=50, overshoot=0.02)(x, y), L2) + TOL
    art = E.DeepFool(clf, max_iter=50, epsilon=0.02, nb_grads=2, batch_size=96, verbose=False)
    assert mine <= robust(model, x, y, art.generate(x.numpy(), y.numpy()), L2) + TOL


def test_square(pneu):
    """At equal query budgets (ours counts the initial query, theirs add it on top) and
    equal seeds: ART's Square draws from NumPy's global generator, seeded here so the
    comparison is reproducible (checked for seeds 0-9 at 100 queries, 0-5 at 200 and 300)."""
    model, x, y, clf = pneu
    x, y = x[:96], y[:96]
    eps, seed = 4 / 255, 0
    # Square is a random search and ART's draws come from another generator, so the two runs differ
    # by chance in which borderline images they break: the tolerance is one image of the 96 (1.04
    # points, a hair above TOL), still far below the gap to a weaker attack.
    tol = max(TOL, 1 / len(x) + 1e-6)
    mine = ours("square", model, x, y, eps=eps, n_queries=100, seed=seed)
    assert mine <= robust(model, x, y, ta.Square(model, eps=eps, n_queries=100, seed=seed)(x, y)) + tol
    np.random.seed(seed)
    art = E.SquareAttack(clf, eps=eps, max_iter=100, batch_size=96, verbose=False)
    assert mine <= robust(model, x, y, art.generate(x.numpy(), y.numpy())) + tol


def test_autoattack_on_rgb():
    """8-class BloodMNIST: APGD-T and FAB-T need more than two classes in torchattacks."""
    t = trained("blood")
    model, x, y = t.model, t.x, t.y
    eps = 1 / 255
    mine = ours("autoattack", model, x, y, eps=eps, apgd_steps=10, fab_steps=10, n_target_classes=7,
                square_queries=200)
    multi = ta.MultiAttack([
        ta.APGD(model, eps=eps, steps=10, seed=0),
        ta.APGDT(model, eps=eps, steps=10, n_classes=8, seed=0),
        ta.FAB(model, eps=eps, steps=10, n_classes=8, multi_targeted=True, seed=0),
        ta.Square(model, eps=eps, n_queries=200, seed=0),
    ])
    assert mine <= robust(model, x, y, multi(x, y)) + TOL
    if "multiprocess" not in sys.modules:
        try:
            import multiprocess  # noqa: F401  # pyflakes: availability check
        except ImportError:
            sys.modules["multiprocess"] = types.ModuleType("multiprocess")
    clf = art_clf(model, x, 8)
    n = x.shape[0]
    aa = E.AutoAttack(clf, norm=np.inf, eps=eps, eps_step=eps / 4, batch_size=n, attacks=[
        E.AutoProjectedGradientDescent(clf, norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=10,
                                       nb_random_init=1, batch_size=n, loss_type="cross_entropy",
                                       verbose=False),
        E.AutoProjectedGradientDescent(clf, norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=10,
                                       nb_random_init=1, batch_size=n,
                                       loss_type="difference_logits_ratio", verbose=False),
        E.SquareAttack(clf, norm=np.inf, eps=eps, max_iter=200, nb_restarts=1, batch_size=n,
                       verbose=False),
    ])
    assert mine <= robust(model, x, y, aa.generate(x.numpy(), y.numpy())) + TOL
