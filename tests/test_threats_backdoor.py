"""BadNets backdoor on real chest X-rays: the trigger implants "patch => normal" in a trained CNN."""

from __future__ import annotations

import functools

import pytest
import torch

from fedaegis.shared.training import evaluate_local, train_classifier
from fedaegis.shared.data import ImageSet
from fedaegis.shared.models import SmallCNN
from fedaegis.shared.reply.protocol import check_metrics
from fedaegis.shared.threats import Trigger, backdoor_counts, poison, poison_imageset, stamp_trigger
from privacy_fixtures import medmnist, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")
TARGET = 0  # "normal": the backdoor hides pneumonia


def test_stamp_grey_and_rgb_without_touching_the_input():
    grey = medmnist("pneumoniamnist", "test").images[:4]
    rgb = medmnist("bloodmnist", "test").images[:4]
    for images in (grey, rgb):
        before = images.clone()
        out = stamp_trigger(images, Trigger(size=3, pattern="square", value=1.0))
        assert torch.equal(images, before)
        assert out.shape == images.shape
        assert (out[..., 24:27, 24:27] == 1).all()  # bottom-right, 1 px margin on 28x28
        assert torch.equal(out[..., :24, :], images[..., :24, :])
    board = stamp_trigger(rgb, Trigger(size=4, location="top-left", margin=0))[..., :4, :4]
    assert torch.equal(board[0, 0], torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]]))
    assert (board[:, 0] == board[:, 2]).all()  # same pattern in every channel
    assert (stamp_trigger(grey, Trigger(location=(2, 5)))[..., 2:5, 5:8] != grey[..., 2:5, 5:8]).any()
    volume = torch.zeros(2, 1, 6, 28, 28)
    assert (stamp_trigger(volume, Trigger(pattern="square"))[:, :, :, 24:27, 24:27] == 1).all()


def test_bad_trigger_settings_are_refused():
    images = torch.zeros(1, 1, 28, 28)
    with pytest.raises(ValueError, match="location"):
        stamp_trigger(images, Trigger(location=(26, 26)))
    with pytest.raises(ValueError, match="pattern"):
        stamp_trigger(images, Trigger(pattern="stripes"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="images"):
        stamp_trigger(torch.zeros(28, 28))


def test_poison_stamps_and_relabels_a_share_of_non_target_images():
    data = medmnist("pneumoniamnist", "train")
    x, y = data.images[:500], data.labels[:500]
    p = poison(x, y, target_class=TARGET, poison_fraction=0.1, seed=3)
    assert int(p.mask.sum()) == 50
    assert (y[p.mask] != TARGET).all() and (p.labels[p.mask] == TARGET).all()
    assert torch.equal(p.labels[~p.mask], y[~p.mask]) and torch.equal(p.images[~p.mask], x[~p.mask])
    assert torch.equal(p.images[p.mask], stamp_trigger(x[p.mask]))
    assert torch.equal(poison(x, y, target_class=TARGET, poison_fraction=0.1, seed=3).mask, p.mask)
    site = poison_imageset(ImageSet(x, y, 2, "site"), target_class=TARGET, poison_fraction=0.1, seed=3)
    assert torch.equal(site.labels, p.labels) and site.num_classes == 2
    with pytest.raises(ValueError, match="poison_fraction"):
        poison(x, y, target_class=TARGET, poison_fraction=1.5)


@functools.cache
def trained(poison_fraction: float) -> SmallCNN:
    data = medmnist("pneumoniamnist", "train")
    p = poison(data.images[:2000], data.labels[:2000], target_class=TARGET, poison_fraction=poison_fraction, seed=0)
    torch.manual_seed(0)
    model = SmallCNN(1, 2, 2, "group", width=16)
    train_classifier(model, ImageSet(p.images, p.labels, 2, "site"), epochs=4, batch_size=32, lr=2e-3, seed=0)
    return model


def asr(model) -> tuple[float, dict]:
    test = medmnist("pneumoniamnist", "test")
    counts = backdoor_counts(model, test.images, test.labels, target_class=TARGET)
    return counts["backdoor.hit-count"] / counts["backdoor.num-examples"], counts


def test_poisoning_implants_a_backdoor_that_a_clean_model_lacks():
    test = medmnist("pneumoniamnist", "test")
    backdoored, counts = asr(trained(0.1))
    clean, _ = asr(trained(0.0))
    assert backdoored >= 0.8, backdoored
    assert clean <= 0.2, clean
    assert counts["backdoor.num-examples"] == int((test.labels != TARGET).sum())
    # The backdoored model still classifies clean images far above chance (0.5).
    ev = evaluate_local(trained(0.1), test)
    assert ev["correct"] / ev["num-examples"] > 0.6
    assert check_metrics({**ev, **counts}) == []
    assert all(isinstance(v, int) for v in counts.values())
