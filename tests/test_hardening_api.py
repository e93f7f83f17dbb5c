"""The hardening, detector and defence-system interfaces on tiny synthetic inputs (fast)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from fedaegis.shared.models.defence_systems import DetectorGatedRouter, LogitEnsemble
from fedaegis.shared.detection import KDBUDetector, MahalanobisDetector, fit_logistic, threshold_at_fpr
from fedaegis.shared.hardening import (
    HARDENINGS,
    build_hardening,
    evaluate_hardening,
    hardening_accuracies,
    pgd_linf,
)
from fedaegis.shared.models import build_model
from fedaegis.shared.reply.protocol import check_metrics
from fedaegis.shared.training import train_classifier

from hardening_fixtures import single_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


def _toy(n: int = 48, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = (torch.rand(n, 3, 12, 12, generator=g) * 0.5 + y.view(-1, 1, 1, 1) * 0.2).clamp(0, 1)
    return x, y


def _cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("cnn", in_channels=3, num_classes=3, norm="group")


def test_pgd_linf_stays_in_the_ball_and_raises_the_loss() -> None:
    torch.manual_seed(0)
    model, (x, y) = _cnn(), _toy()
    loss = nn.CrossEntropyLoss(reduction="none")
    eps = 4 / 255
    x_adv = pgd_linf(model, x, lambda z, _: loss(z, y), eps=eps, alpha=eps / 4, steps=5,
                     gen=torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        assert loss(model(x_adv), y).mean() > loss(model(x), y).mean()
    assert all(p.grad is None for p in model.parameters())  # crafting leaves no weight gradients
    assert model.training


@pytest.mark.parametrize("name", sorted(HARDENINGS))
def test_every_method_trains_and_reports_counts(name: str) -> None:
    model, (x, y) = _cnn(), _toy()
    before = [p.detach().clone() for p in model.parameters()]
    method = build_hardening(name, eps=4 / 255, **({} if name == "fast-fgsm" else {"steps": 2}))
    out = train_classifier(model, (x, y), method, epochs=1, batch_size=16, lr=1e-3,
                           unlabelled=_toy(32, seed=1)[0] if method.needs_unlabelled else None)
    assert check_metrics(out) == [] and out["num-examples"] == len(y)
    assert 0 <= out["train-correct"] <= len(y) and out["train-loss-sum"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    if name == "ssat":
        assert out["train-unlabelled-count"] == 48  # 3 steps of 16 unlabelled images
        assert 0 <= out["train-pseudo-labelled-count"] <= 48


def test_build_hardening_names_the_bad_field() -> None:
    with pytest.raises(ValueError, match="^name:"):
        build_hardening("nope")
    with pytest.raises(ValueError, match="^beta:"):
        build_hardening("pgd-at", beta=1.0)
    with pytest.raises(ValueError, match="^mix:"):
        build_hardening("pgd-at", mix=1.5)
    with pytest.raises(ValueError, match="^teacher:"):
        build_hardening("ssat", teacher="oracle")
    with pytest.raises(ValueError, match="^unlabelled:"):
        train_classifier(_cnn(), _toy(), build_hardening("ssat"), epochs=1, batch_size=8, lr=1e-3)
    assert build_hardening("trades", beta=3.0, steps=5).alpha == pytest.approx(2.5 * (8 / 255) / 5)
    with pytest.raises(ValueError, match="^optimizer:"):
        train_classifier(_cnn(), _toy(), build_hardening("pgd-at"), epochs=1, batch_size=8, lr=1e-3,
                         optimizer="lion")


def test_evaluate_hardening_counts_pass_the_protocol() -> None:
    x, y = _toy()
    systems = {"a": _cnn(0), "b": LogitEnsemble([_cnn(1), _cnn(2)])}
    out = evaluate_hardening(systems, (x, y), [2 / 255, 8 / 255], steps=3, batch_size=20)
    assert check_metrics(out) == [] and out["num-examples"] == len(y)
    table = hardening_accuracies(out)
    assert set(table) == {"a", "b"} and set(table["a"]) == {"clean", "eps=0.00784314", "eps=0.0313725"}
    for accs in table.values():
        assert 0 <= accs["eps=0.0313725"] <= accs["clean"] <= 1
    transfer = evaluate_hardening({"b": systems["b"]}, (x, y), [8 / 255], steps=3, source=systems["a"])
    assert check_metrics(transfer) == []
    with pytest.raises(ValueError, match="systems"):
        evaluate_hardening({"Bad.Name": systems["a"]}, (x, y), [8 / 255])


def test_ensemble_averages_logits() -> None:
    x, _ = _toy(8)
    members = [_cnn(s) for s in range(3)]
    with torch.no_grad():
        logits = [m(x) for m in members]
        assert torch.allclose(LogitEnsemble(members)(x), sum(logits) / 3, atol=1e-6)
        weighted = LogitEnsemble(members[:2], weights=[3.0, 1.0])(x)
        assert torch.allclose(weighted, 0.75 * logits[0] + 0.25 * logits[1], atol=1e-6)
    with pytest.raises(ValueError, match="weights"):
        LogitEnsemble(members, weights=[1.0, -1.0, 1.0])


class _Score(nn.Module):
    """A stand-in detector: the mean intensity of the image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).mean(1)


def test_router_outputs_the_hard_routing_and_passes_gradients_through_the_gate() -> None:
    x, _ = _toy(12)
    standard, hardened = _cnn(0), _cnn(1)
    router = DetectorGatedRouter(_Score(), standard, hardened, threshold=0.45, temperature=0.05)
    routed = router.route(x)
    assert 0 < int(routed.sum()) < len(x)
    with torch.no_grad():
        expected = torch.where(routed[:, None], hardened(x), standard(x))
        assert torch.equal(router(x), expected)
    xg = x.clone().requires_grad_(True)
    router(xg).sum().backward()
    hard = DetectorGatedRouter(_Score(), standard, hardened, threshold=0.45, temperature=0.05, gate="hard")
    xh = x.clone().requires_grad_(True)
    hard(xh).sum().backward()
    assert not torch.allclose(xg.grad, xh.grad)  # the straight-through gate adds the gate's gradient
    calibrated = DetectorGatedRouter.calibrated(_Score(), standard, hardened, x, fpr=0.25)
    # the conformal cut is the ceil(13 * 0.75) = 10th of 12 scores: 2 lie above it, and a new clean
    # input with probability 3/13 <= 0.25 (the plain 0.75 quantile would route 3 of 12 and 4/13 > 0.25)
    assert int(calibrated.route(x).sum()) == 2


def test_the_threshold_keeps_the_false_positive_rate_on_new_clean_inputs_at_most_fpr() -> None:
    """20,000 sites each calibrate on 120 clean scores and route 120 new ones: on average at most
    ``fpr`` of the new ones are routed (the plain 0.9 quantile routes about 0.107 of them)."""
    g = torch.Generator().manual_seed(0)
    cal, new = torch.rand(20_000, 120, generator=g), torch.rand(20_000, 120, generator=g)
    conformal = torch.tensor([threshold_at_fpr(c, 0.1) for c in cal])
    plain = torch.quantile(cal.double(), 0.9, dim=1).float()
    assert (new > conformal[:, None]).float().mean() <= 0.1 + 0.001  # (120 - 109 + 1) / 121 = 0.0992 expected
    assert (new > plain[:, None]).float().mean() > 0.104
    assert threshold_at_fpr(torch.tensor([3.0, 1.0, 2.0]), 0.1) == 3.0  # too few scores: the largest
    assert threshold_at_fpr(torch.tensor([3.0, 1.0, 2.0]), 1.0) == 1.0
    with pytest.raises(ValueError, match="scores"):
        threshold_at_fpr(torch.tensor([]), 0.1)


def test_detectors_score_and_fit_on_a_toy_model() -> None:
    model, (x, y) = _cnn(), _toy()
    maha = MahalanobisDetector(model).fit((x, y))
    with torch.no_grad():
        s = maha(x)
        assert s.shape == (len(x),) and (s >= 0).all()
        assert torch.allclose(s, maha.distances(x).amin(1))
    kd = KDBUDetector(model, mc_samples=4).fit((x, y))
    kd.fit_combiner(x, (x + 0.2 * torch.rand_like(x)).clamp(0, 1))
    with torch.no_grad():
        assert kd(x).shape == (len(x),) and torch.isfinite(kd(x)).all()
    with pytest.raises(RuntimeError, match="fit"):
        MahalanobisDetector(model)(x)


def test_fit_logistic_matches_sklearn() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(300, 2, generator=g, dtype=torch.float64)
    target = ((z @ torch.tensor([1.5, -0.7], dtype=torch.float64) + 0.3
               + 0.5 * torch.randn(300, generator=g, dtype=torch.float64)) > 0).double()
    w, b = fit_logistic(z, target, l2=0.0)
    ref = LogisticRegression(C=1e6, class_weight="balanced", max_iter=1000).fit(z.numpy(), target.numpy())
    np.testing.assert_allclose(w.numpy(), ref.coef_[0], rtol=2e-2, atol=2e-2)
    assert float(b) == pytest.approx(float(ref.intercept_[0]), abs=2e-2)
