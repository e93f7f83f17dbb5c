"""Binned ROC AUC: fixed shared bins, wire names that pass the protocol, sums over sites."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import roc_auc_score

from fedaegis.shared.detection import ScoreBins, auc_table, binned_auc, decode_histograms, encode_histograms
from fedaegis.shared.reply.protocol import check_metrics, is_aggregate_name, suppress_small_cells


def _exact_auc(clean: torch.Tensor, adv: torch.Tensor) -> float:
    labels = torch.cat([torch.zeros(len(clean)), torch.ones(len(adv))])
    return float(roc_auc_score(labels.numpy(), torch.cat([clean, adv]).numpy()))


def _site(seed: int, n: int = 400, shift: float = 0.6) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance-like positive scores; adversarial ones larger on average."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.exp(torch.randn(n, generator=g) * 0.3 + 1.5)
    adv = torch.exp(torch.randn(n // 2, generator=g) * 0.4 + 1.5 + shift)
    return clean, adv


@pytest.mark.parametrize("scale,lo,hi", [("log", 1.0, 1e3), ("asinh", -1e3, 1e3), ("linear", 0.0, 60.0)])
def test_binned_auc_matches_exact_auc(scale: str, lo: float, hi: float) -> None:
    clean, adv = _site(0)
    bins = ScoreBins(lo, hi, bins=200, scale=scale)
    assert abs(binned_auc(bins.histogram(clean), bins.histogram(adv)) - _exact_auc(clean, adv)) < 0.01


def test_binned_auc_edge_cases() -> None:
    assert binned_auc([0, 5, 0], [0, 0, 5]) == 1.0
    assert binned_auc([0, 0, 5], [5, 0, 0]) == 0.0
    assert binned_auc([3, 0], [3, 0]) == 0.5  # all tied
    assert math.isnan(binned_auc([0, 0], [1, 1]))
    with pytest.raises(ValueError, match="differ in length"):
        binned_auc([1, 2], [1, 2, 3])


def test_out_of_range_scores_keep_their_order_at_the_ends() -> None:
    bins = ScoreBins(1.0, 10.0, bins=10, scale="log")
    idx = bins.index(torch.tensor([0.01, 1.0, 9.99, 1e6, float("nan"), float("inf")]))
    assert idx.tolist() == [0, 0, 9, 9, 9, 9]


@pytest.mark.parametrize("kwargs,field", [
    ({"lo": 0.0, "hi": 1.0, "scale": "log"}, "lo"),
    ({"lo": 2.0, "hi": 1.0}, "lo, hi"),
    ({"lo": 1.0, "hi": 2.0, "bins": 1}, "bins"),
    ({"lo": 1.0, "hi": 2.0, "scale": "sqrt"}, "scale"),
])
def test_bad_bins_are_refused(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        ScoreBins(**kwargs)


def test_wire_names_pass_the_protocol_and_sum_over_sites() -> None:
    bins = ScoreBins(1.0, 1e3, bins=200)
    sites = [_site(1), _site(2, n=250, shift=0.9)]
    eps = 8 / 255
    replies = [{"num-examples": len(c) + len(a), **encode_histograms("mahalanobis", eps, bins.histogram(c),
                                                                      bins.histogram(a))}
               for c, a in sites]
    for reply in replies:
        assert check_metrics(reply) == []
        assert all(is_aggregate_name(k) for k in reply)
        assert any(k.startswith("detector.mahalanobis.eps=0.0313725.clean-bin") for k in reply)
    summed = {k: sum(r[k] for r in replies) for k in replies[0]}
    pooled_clean = torch.cat([c for c, _ in sites])
    pooled_adv = torch.cat([a for _, a in sites])
    ((det, e), auc), = auc_table(summed).items()
    assert det == "mahalanobis" and e == pytest.approx(eps, rel=1e-5)
    # AUC of the summed histograms == binned AUC of the pooled samples, close to the exact AUC
    assert auc == pytest.approx(binned_auc(bins.histogram(pooled_clean), bins.histogram(pooled_adv)), abs=1e-12)
    assert abs(auc - _exact_auc(pooled_clean, pooled_adv)) < 0.01
    clean_hist, adv_hist = decode_histograms(summed)[("mahalanobis", e)]
    assert clean_hist.sum() == len(pooled_clean) and adv_hist.sum() == len(pooled_adv)


def test_a_small_histogram_is_suppressed_whole() -> None:
    bins = ScoreBins(1.0, 1e3, bins=20)
    metrics = {"num-examples": 100, **encode_histograms("kd-bu", 0.01, bins.histogram(torch.tensor([2.0, 3.0])),
                                                         bins.histogram(torch.tensor([50.0])))}
    out = suppress_small_cells(metrics, 10, keep=("num-examples",))
    hist = {k: v for k, v in out.items() if "-bin" in k}
    assert all(v == 0 for v in hist.values()) and out["detector.kd-bu.eps=0.01.suppressed-count"] == 1
    with pytest.raises(ValueError, match="detector"):
        encode_histograms("Bad Name", 0.01, torch.zeros(2), torch.zeros(2))
