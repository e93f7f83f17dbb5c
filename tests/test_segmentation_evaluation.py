"""Site evaluation returns only summable aggregates, named so the server can combine them."""

from __future__ import annotations

import math

import pytest
from seg_fixtures import EPS, trained_2d, trained_3d

from fedaegis.shared.reply.protocol import check_metrics, is_aggregate_name
from fedaegis.shared.segmentation import (
    evaluate_segmentation,
    format_eps,
    parse_metric_name,
    segmentation_summary,
)

ATTACKS = ["pgd", "pgd:l2", "dag", "multiscale", "asma"]


@pytest.fixture(scope="module")
def metrics() -> dict[str, float | int]:
    model, _, test = trained_2d()
    return evaluate_segmentation(model, test, ATTACKS, [EPS], steps=5, max_volumes=3)


def test_every_metric_is_a_scalar_aggregate(metrics):
    assert check_metrics(metrics) == []
    assert all(is_aggregate_name(k) for k in metrics)
    assert metrics["num-examples"] == metrics["seg.volumes-count"] == 3
    e = format_eps(EPS)
    assert e == "0.0156863"  # the one epsilon format of every family (6 significant digits)
    for name in ("pgd.linf", "pgd.l2", "dag.linf", "multiscale.linf", "asma.linf"):
        assert f"seg.attack.{name}.eps={e}.dice-class1-sum" in metrics
        assert f"seg.attack.{name}.eps={e}.hd95-class2-count" in metrics
    assert f"seg.attack.asma.linf.eps={e}.target-iou-sum" in metrics
    assert f"seg.attack.pgd.linf.eps={e}.target-iou-sum" not in metrics
    for name in metrics:
        if name.startswith("seg.") and name.count(".") > 1:
            assert parse_metric_name(name) is not None, name


def test_attacks_lower_dice_and_robust_dice_is_the_worst(metrics):
    s = segmentation_summary(metrics)
    e = format_eps(EPS)
    clean = s["seg.clean.dice"]
    for name in ("pgd.linf", "pgd.l2", "dag.linf", "multiscale.linf"):
        assert s[f"seg.attack.{name}.eps={e}.dice"] < clean
        assert math.isclose(s[f"seg.attack.{name}.eps={e}.dice-drop"], clean - s[f"seg.attack.{name}.eps={e}.dice"])
    linf_attacks = ("pgd", "dag", "multiscale", "asma")
    robust = s[f"seg.robust.linf.eps={e}.dice"]
    assert all(robust <= s[f"seg.attack.{a}.linf.eps={e}.dice"] + 1e-9 for a in linf_attacks)
    assert s[f"seg.robust.l2.eps={e}.dice"] <= s[f"seg.attack.pgd.l2.eps={e}.dice"] + 1e-9
    worst = sum(metrics[f"seg.robust.linf.eps={e}.worst-{a}-count"] for a in ("clean", *linf_attacks))
    assert worst == 3
    assert s[f"seg.attack.asma.linf.eps={e}.target-iou"] > s[f"seg.attack.asma.linf.eps={e}.clean-target-iou"]


def test_perturbation_norms_respect_the_budget(metrics):
    e = format_eps(EPS)
    m = metrics
    assert m[f"seg.attack.pgd.linf.eps={e}.linf-sum"] <= EPS * m[f"seg.attack.pgd.linf.eps={e}.linf-count"] + 1e-6
    # L2 eps is a per-voxel RMS: a volume's L2 norm is at most eps * sqrt(its voxels)
    l2_mean = m[f"seg.attack.pgd.l2.eps={e}.l2-sum"] / m[f"seg.attack.pgd.l2.eps={e}.l2-count"]
    voxels_per_volume = m["seg.voxels-count"] / m["seg.volumes-count"]
    assert l2_mean <= EPS * math.sqrt(voxels_per_volume) * 1.5  # volumes differ in slice count


def test_every_group_carries_its_size_for_cell_suppression(metrics):
    from fedaegis.shared.reply.protocol import group_sizes, suppress_small_cells

    e = format_eps(EPS)
    groups = {g: n for g, n in group_sizes(metrics).items() if g.startswith("seg.")}
    assert f"seg.attack.asma.linf.eps={e}" in groups and set(groups.values()) == {3}
    hidden = suppress_small_cells(metrics, 4)  # 3 patients are too few to report
    assert hidden[f"seg.robust.linf.eps={e}.dice-sum"] == 0 and hidden[f"seg.robust.linf.eps={e}.suppressed-count"] == 1
    assert suppress_small_cells(metrics, 3)["seg.clean.dice-sum"] == metrics["seg.clean.dice-sum"]


def test_site_sums_add_up_to_the_federation_total():
    model, _, test = trained_2d()
    whole = evaluate_segmentation(model, test, [], [EPS])
    halves = [evaluate_segmentation(model, test.select_volumes(v), [], [EPS]) for v in ([0, 1], [2, 3])]
    assert set(whole) == set(halves[0])
    for name, value in whole.items():
        assert math.isclose(value, halves[0][name] + halves[1][name], rel_tol=1e-5, abs_tol=1e-5), name


def test_3d_evaluation_smoke():
    model, _, test = trained_3d()
    m = evaluate_segmentation(model, test, ["pgd", "asma"], EPS, steps=2, hd95=False)
    assert check_metrics(m) == []
    assert m["num-examples"] == test.num_volumes == m["seg.samples-count"]


def test_bad_arguments_are_refused():
    model, _, test = trained_2d()
    with pytest.raises(ValueError, match="seg-attacks"):
        evaluate_segmentation(model, test, ["fgsm"])
    with pytest.raises(ValueError, match="seg-attacks"):
        evaluate_segmentation(model, test, ["pgd", "pgd:linf"])
    with pytest.raises(ValueError, match="seg-eps"):
        evaluate_segmentation(model, test, ["pgd"], [0.0])
    with pytest.raises(ValueError, match="seg-target-source"):
        evaluate_segmentation(model, test, ["asma"], target_source="atlas")
