"""Gradient-inversion audits reconstruct an undefended real chest X-ray from its update."""

from __future__ import annotations

import copy

import pytest
import torch

from fedaegis.shared.privacy import (
    LeNet,
    batch_gradients,
    gradients_from_update,
    infer_labels,
    inversion_audit,
    matched_scores,
    quality_sums,
    reconstruct,
)
from fedaegis.shared.privacy.quality import PSNR_CAP_DB
from fedaegis.shared.reply.protocol import check_metrics
from privacy_fixtures import medmnist, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def batch(n: int = 1, start: int = 2000, name: str = "pneumoniamnist") -> tuple[torch.Tensor, torch.Tensor]:
    data = medmnist(name, "train")
    return data.images[start : start + n], data.labels[start : start + n]


def model(act: str = "sigmoid", **kw) -> LeNet:
    torch.manual_seed(0)
    return LeNet(act=act, **kw)


def test_quality_matches_a_permuted_batch_and_reports_sums_only():
    x, _ = batch(3)
    recon = x[[2, 0, 1]] + 0.01 * torch.randn_like(x)
    psnr, ssim = matched_scores(recon, x)
    assert (psnr > 35).all() and (ssim > 0.95).all()
    exact = quality_sums(x, x)
    assert exact == {"inversion.psnr-sum": 3 * PSNR_CAP_DB, "inversion.ssim-sum": pytest.approx(3.0), "inversion.images-count": 3}
    failed = quality_sums(torch.full_like(x, float("nan")), x)
    assert failed["inversion.psnr-sum"] < 3 * 15  # a diverged attack scores as a failure, not the cap
    assert check_metrics({"num-examples": 3, **exact}) == []


def test_labels_are_read_off_the_last_layer():
    x, y = batch(1)
    net = model()
    assert infer_labels(net, batch_gradients(net, x, y), 1, x.shape).tolist() == y.tolist()
    x, y = batch(4, name="bloodmnist")  # 8 classes, four images
    net = model(in_channels=3, num_classes=8)
    assert sorted(infer_labels(net, batch_gradients(net, x, y), 4, x.shape).tolist()) == sorted(y.tolist())


def test_one_sgd_step_delta_is_the_batch_gradient():
    x, y = batch(2)
    net = model()
    before = copy.deepcopy(net.state_dict())
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    grads = batch_gradients(net, x, y)
    opt.zero_grad()
    torch.nn.functional.cross_entropy(net(x), y).backward()
    opt.step()
    for g, d in zip(grads, gradients_from_update(net, before, net.state_dict(), lr=0.5), strict=True):
        torch.testing.assert_close(g, d, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("method", "iterations"), [("idlg", 200), ("dlg", 200), ("ig", 400)])
def test_undefended_update_leaks_the_image(method, iterations):
    x, y = batch(1)
    audit = inversion_audit(model(), x, y, method=method, iterations=iterations)
    assert set(audit) == {"inversion.psnr-sum", "inversion.ssim-sum", "inversion.images-count"}
    assert audit["inversion.images-count"] == 1
    assert audit["inversion.psnr-sum"] > 20, audit
    assert audit["inversion.ssim-sum"] > 0.8, audit
    assert check_metrics({"num-examples": 1, **audit}) == []


def test_audit_attacks_the_update_that_is_sent_from_a_model_delta():
    x, y = batch(1)
    net = model(act="tanh")
    before = copy.deepcopy(net.state_dict())
    sent = copy.deepcopy(net)
    opt = torch.optim.SGD(sent.parameters(), lr=0.1)
    torch.nn.functional.cross_entropy(sent(x), y).backward()
    opt.step()
    grads = gradients_from_update(net, before, sent.state_dict(), lr=0.1)
    assert inversion_audit(net, x, y, gradients=grads, iterations=200)["inversion.psnr-sum"] > 20


def test_unknown_method_is_refused():
    x, y = batch(1)
    net = model()
    with pytest.raises(ValueError, match="method"):
        reconstruct(net, batch_gradients(net, x, y), x.shape, method="gan")  # type: ignore[arg-type]
