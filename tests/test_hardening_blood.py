"""Adversarial training on real BloodMNIST: every method buys PGD robustness over plain training.

Centrally, on a 3000-image subset with a small GroupNorm CNN, each method is
fine-tuned from the standard model and scored by PGD-10 at eps 8/255 on 500 test
images (counts only, as a site would report them).
"""

from __future__ import annotations

import copy

import pytest
import torch
from hardening_fixtures import EPS, RECIPES, blood, hardened, hardening_table, single_thread

from fedaegis.shared.hardening import build_hardening, evaluate_hardening, hardening_accuracies
from fedaegis.shared.training import train_classifier
from fedaegis.shared.models import SmallCNN
from fedaegis.shared.reply.protocol import check_metrics

ROBUST = f"eps={EPS:.6g}"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


def _table(show: bool = False) -> dict[str, dict[str, float]]:
    table = hardening_accuracies(hardening_table())
    if show:
        print("\nhardening table (accuracy):", {k: {a: round(b, 3) for a, b in v.items()} for k, v in table.items()})
    return table


def test_table_is_counts_a_site_may_send() -> None:
    metrics = hardening_table()
    assert check_metrics(metrics) == []
    assert metrics["num-examples"] == len(blood().y_test)
    for name in ("standard", *RECIPES):
        assert metrics[f"hardening.{name}.{ROBUST}.robust-correct"] <= metrics[f"hardening.{name}.clean-correct"]


def test_pgd_at_raises_robust_accuracy_by_at_least_20_points() -> None:
    table = _table(show=True)
    assert table["standard"]["clean"] > 0.75
    assert table["pgd-at"][ROBUST] >= table["standard"][ROBUST] + 0.20
    assert table["pgd-at"]["clean"] > 0.5  # robust, but still a usable classifier


@pytest.mark.parametrize("name", ["trades", "fast-fgsm", "mart"])
def test_other_methods_raise_robust_accuracy(name: str) -> None:
    table = _table()
    # These recipes fine-tune for only two epochs and land about 10 points above the standard model
    # (MART: 13.2% -> 23.0%, 49 of the 500 test images). A robust accuracy near 0.2 on 500 images has
    # a binomial standard error of about 0.018, so an 8-point gain is still over four standard errors.
    assert table[name][ROBUST] >= table["standard"][ROBUST] + 0.08
    assert table[name]["clean"] > 0.3  # well above chance (1/8)


def test_training_counts_pass_the_protocol() -> None:
    for name in RECIPES:
        counts = hardened(name)[1]
        assert check_metrics(counts) == []
        assert counts["num-examples"] == len(blood().train)


def test_ssat_uses_unlabelled_images_where_labels_are_few() -> None:
    """300 labelled + 2700 unlabelled images: SSAT vs PGD-AT on the labels alone."""
    data = blood()
    labelled = data.train.subset(torch.arange(300))
    unlabelled = data.train.images[300:]
    torch.manual_seed(0)
    base = SmallCNN(3, 8, 2, "group", width=16)
    train_classifier(base, labelled, epochs=30, batch_size=64, lr=3e-3)
    supervised, ssat = copy.deepcopy(base), copy.deepcopy(base)
    common = {"eps": EPS, "steps": 3}
    train_classifier(supervised, labelled, build_hardening("pgd-at", **common), epochs=12, batch_size=64, lr=3e-3)
    counts = train_classifier(ssat, labelled, build_hardening("ssat", threshold=0.7, **common),
                              epochs=12, batch_size=64, lr=3e-3, unlabelled=unlabelled)
    assert check_metrics(counts) == []
    assert counts["train-unlabelled-count"] == 5 * 64  # one unlabelled batch per labelled step
    assert 0 < counts["train-pseudo-labelled-count"] < counts["train-unlabelled-count"]
    metrics = evaluate_hardening({"base": base, "supervised": supervised, "ssat": ssat},
                                 (data.x_test, data.y_test), [EPS], steps=10)
    table = hardening_accuracies(metrics)
    print("\nSSAT, 300 labels:", {k: {a: round(b, 3) for a, b in v.items()} for k, v in table.items()})
    assert table["ssat"][ROBUST] >= table["base"][ROBUST] + 0.10  # it trains robustness
    assert table["ssat"][ROBUST] >= table["supervised"][ROBUST] - 0.05  # no worse than labels alone
    # and keeps clean accuracy within a bounded cost: 12 epochs of adversarial training on 300 labels
    # land several points apart on different CPUs (oneDNN picks other kernels, rounding differs):
    # within 0.02 where this test was written, 0.500 vs 0.566 on a later machine (33 of 500 images)
    assert table["ssat"]["clean"] >= table["supervised"]["clean"] - 0.08
