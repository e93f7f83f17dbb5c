"""Defences against inversion: DP-SGD (Opacus), update pruning and proximal gradient split learning."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from fedaegis.shared.models import SmallCNN
from fedaegis.shared.privacy import (
    LeNet,
    Wire,
    activation_inversion_audit,
    dp_sgd_step_gradients,
    inversion_audit,
    prune_smallest,
    prune_update,
    psgl_evaluate,
    psgl_train,
    split_model,
)
from fedaegis.shared.reply.protocol import check_metrics
from fedaegis.shared.training import DPSGD, train_classifier
from privacy_fixtures import medmnist, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def batch(n: int = 1, start: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
    data = medmnist("pneumoniamnist", "train")
    return data.images[start : start + n], data.labels[start : start + n]


def lenet() -> LeNet:
    torch.manual_seed(0)
    return LeNet()


@functools.cache
def undefended_psnr() -> float:
    x, y = batch()
    return inversion_audit(lenet(), x, y, iterations=200)["inversion.psnr-sum"]


def test_dp_sgd_update_defeats_the_audit():
    x, y = batch()
    grads, epsilon = dp_sgd_step_gradients(lenet(), x, y, target_epsilon=8.0, target_delta=1e-5, max_grad_norm=1.0)
    assert 7.0 <= epsilon <= 8.0 + 1e-6
    audit = inversion_audit(lenet(), x, y, gradients=grads, iterations=200)
    assert undefended_psnr() > 20
    assert audit["inversion.psnr-sum"] < 12, audit
    assert check_metrics({"num-examples": 1, **audit}) == []


def test_dp_sgd_training_spends_the_target_epsilon_and_trains():
    data = medmnist("pneumoniamnist", "train")
    model = SmallCNN(1, 2, 2, "group", width=8)
    before = copy.deepcopy(model.state_dict())
    torch.manual_seed(0)
    privacy = DPSGD(target_epsilon=4.0)
    metrics = train_classifier(model, (data.images[:512], data.labels[:512]), privacy=privacy, epochs=1,
                               batch_size=64, lr=1e-3, optimizer="adam")
    assert 3.0 <= privacy.epsilon <= 4.0 + 1e-6 and privacy.target_delta == 1e-5 and privacy.noise_multiplier > 0.5
    assert metrics["num-examples"] == 512 and check_metrics(metrics) == []
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(hasattr(p, "grad_sample") and p.grad_sample is not None for p in model.parameters())
    assert not hasattr(model, "_module")  # the caller's module, not Opacus' wrapper


def test_dp_sgd_refuses_batchnorm():
    x, y = batch(4)
    with pytest.raises(ValueError, match="norm='group'"):
        train_classifier(SmallCNN(norm="batch"), (x, y), privacy=DPSGD(8.0), epochs=1, batch_size=4, lr=0.1)


def test_pruning_zeroes_the_smallest_share_and_lowers_psnr():
    grads = [torch.arange(1.0, 11.0), -torch.arange(1.0, 5.0).reshape(2, 2)]
    pruned = prune_smallest(grads, 0.5)
    assert pruned[0].tolist() == [0, 0, 0, 0, 0, 6, 7, 8, 9, 10]
    assert pruned[1].tolist() == [[0, 0], [-3, -4]]
    x, y = batch()
    audit = inversion_audit(lenet(), x, y, defence=lambda g: prune_smallest(g, 0.9), iterations=200)
    assert audit["inversion.psnr-sum"] < undefended_psnr() - 10, (audit, undefended_psnr())
    with pytest.raises(ValueError, match="fraction"):
        prune_smallest(grads, 1.0)


def test_pruned_update_keeps_the_largest_changes():
    g = {"w": torch.zeros(4), "n": torch.tensor(3)}
    local = {"w": torch.tensor([0.1, -2.0, 0.3, 4.0]), "n": torch.tensor(5)}
    sent = prune_update(g, local, 0.5)
    assert sent["w"].tolist() == [0, -2.0, 0, 4.0] and int(sent["n"]) == 5


@functools.cache
def psgl_run() -> tuple:
    data, test = medmnist("pneumoniamnist", "train"), medmnist("pneumoniamnist", "test")
    torch.manual_seed(0)
    split = split_model(SmallCNN(1, 2, 2, "group", width=16), cut=4)
    wire = Wire()
    first = psgl_train(split, data.images[:1000], data.labels[:1000], epochs=1, wire=wire, seed=0)
    weights = [p.detach().clone() for p in split.site.parameters()]
    last = psgl_train(split, data.images[:1000], data.labels[:1000], epochs=2, seed=1)
    return split, wire, first, last, weights, psgl_evaluate(split, test.images, test.labels)


def test_psgl_wire_carries_only_cut_activations_and_gradients():
    split, wire, first, *_ = psgl_run()
    kinds = {(direction, kind) for direction, kind, _ in wire.log}
    assert kinds == {("up", "activations"), ("down", "activations"), ("up", "gradients"), ("down", "gradients")}
    for direction, kind, shape in wire.log:
        if direction == "up" and kind == "activations" or direction == "down" and kind == "gradients":
            assert shape[1:] == (16, 14, 14)  # the cut layer, never the 1x28x28 images
        else:
            assert shape[1:] == (32,)  # server features for the site's head; labels stay at the site
    assert len(wire.log) == 4 * ((1000 + 31) // 32)
    assert check_metrics(first) == []


def test_psgl_training_reduces_loss_and_learns():
    _, _, first, last, _, ev = psgl_run()
    assert last["train-loss-sum"] < first["train-loss-sum"]
    assert ev["correct"] / ev["num-examples"] > 0.7
    assert check_metrics(ev) == []


def test_psgl_proximal_l1_step_sparsifies_site_weights():
    data = medmnist("pneumoniamnist", "train")
    split = split_model(SmallCNN(1, 2, 2, "group", width=8), cut=4)
    psgl_train(split, data.images[:128], data.labels[:128], epochs=1, prox="l1", prox_strength=50.0, lr=1e-2)
    kernel = split.site[0].weight
    assert float((kernel == 0).float().mean()) > 0.5
    with pytest.raises(ValueError, match="cut"):
        split_model(SmallCNN(), cut=0)


def test_psgl_activation_inversion_audit_reports_aggregates():
    split, *_ = psgl_run()
    x, _ = batch(2)
    audit = activation_inversion_audit(split, x, iterations=150)
    assert audit["inversion.images-count"] == 2
    assert 0 < audit["inversion.psnr-sum"] / 2 < 60
    assert check_metrics({"num-examples": 2, **audit}) == []
