"""Label-only attacks (HopSkipJump, RayS): query grids from one run, and no weaker than ART.

The oracle comparison runs ART's HopSkipJump (Linf, 4 iterations) on the same
model and correctly classified images, counts the queries it makes per sample,
and gives ours exactly that budget.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
import torch
from attack_fixtures import trained
from torch import nn

from fedaegis.shared.attacks import ATTACKS, build_attack
from fedaegis.shared.reply.protocol import check_metrics
from fedaegis.shared.results.robustness import encode

art_cls = pytest.importorskip("art.estimators.classification")
E = pytest.importorskip("art.attacks.evasion")
warnings.filterwarnings("ignore", module="art")

EPS = 8 / 255


class _Counted(nn.Module):
    """The model, counting the rows ART sends through it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.rows = model, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += len(x)
        return self.model(x.float())


def _correct(n: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    t = trained("pneumonia")
    with torch.inference_mode():
        ok = t.model(t.x).argmax(1) == t.y
    return t.model, t.x[ok][:n], t.y[ok][:n]


@pytest.mark.parametrize("name", ["hopskipjump", "rays"])
def test_query_grid_is_monotone_and_ends_at_the_robust_accuracy(name: str) -> None:
    model, x, y = _correct(16)
    result = build_attack(name, eps=EPS, n_queries=400, budgets=[50, 100, 200]).attack(model, x, y)
    grid = [result.extra[f"robust_at_q{b}"] for b in (50, 100, 200, 400)]
    print(f"\n{name}: robust images at 50/100/200/400 queries:", grid, "queries:", result.queries)
    assert grid == sorted(grid, reverse=True)  # more queries never leave more images robust
    assert grid[-1] == result.robust_correct < len(x)
    assert 0 < result.queries <= 400 * len(x)
    wire = {"num-examples": len(x), **encode({(name, EPS): result.counts()}, targeted=())}
    assert check_metrics(wire) == []
    assert f"attack.{name}.eps={EPS:.6g}.robust-at-q100-count" in wire


def test_label_only_attacks_are_registered_and_validate() -> None:
    assert {"hopskipjump", "rays"} <= set(ATTACKS)
    with pytest.raises(ValueError, match="budgets"):
        build_attack("hopskipjump", n_queries=100, budgets=[500])
    with pytest.raises(ValueError, match="norm"):
        build_attack("rays", norm="l2", eps=0.5)
    with pytest.raises(ValueError, match="n_queries"):
        build_attack("rays", n_queries=0)


def test_l2_hopskipjump_and_3d_inputs() -> None:
    t = trained("adrenal3d")
    x, y = t.x[:4], t.y[:4]
    result = build_attack("hopskipjump", norm="l2", eps=2.0, n_queries=150, budgets=[50]).attack(t.model, x, y)
    assert result.x_adv.shape == x.shape
    assert ((result.x_adv - x).flatten(1).norm(dim=1) <= 2.0 * (1 + 1e-5)).all()
    result = build_attack("rays", eps=EPS, n_queries=100, budgets=[50]).attack(t.model, x, y)
    assert (result.x_adv - x).abs().max() <= EPS + 1e-6


def test_hopskipjump_no_weaker_than_art_at_its_query_budget() -> None:
    model, x, y = _correct(24)
    counted = _Counted(model).eval()
    clf = art_cls.PyTorchClassifier(model=counted, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                    nb_classes=2, clip_values=(0.0, 1.0))
    np.random.seed(0)
    start = time.perf_counter()
    x_art = torch.as_tensor(E.HopSkipJump(clf, norm=np.inf, max_iter=4, verbose=False).generate(x.numpy()))
    art_s = time.perf_counter() - start
    budget = counted.rows // len(x)
    with torch.inference_mode():
        fooled = (model(x_art.float()).argmax(1) != y) & ((x_art - x).flatten(1).abs().amax(1) <= EPS + 1e-6)
    art_robust = 1 - float(fooled.float().mean())
    start = time.perf_counter()
    mine = build_attack("hopskipjump", eps=EPS, n_queries=budget, budgets=[budget // 2]).attack(model, x, y)
    mine_s = time.perf_counter() - start
    print(f"\nLinf {EPS * 255:.0f}/255, {budget} queries/sample: robust accuracy ours {mine.robust_accuracy:.3f} "
          f"(at half the budget {mine.extra[f'robust_at_q{budget // 2}'] / len(x):.3f}), ART {art_robust:.3f}; "
          f"seconds ours {mine_s:.1f}, ART {art_s:.1f}")
    assert mine.queries <= budget * len(x)
    assert mine.robust_accuracy <= art_robust + 1 / len(x)
