"""A site's test split stays as stored: evaluation and attacks draw batches, never the whole split.

Issue 17: a 10,000-image site's test split at 224 px is 0.4 GB (grey) to 1.2 GB (colour) as
float32. The figures must not change: each batch is made by the same deterministic pipeline
as the whole split was, so the lazy split gives bit-identical counts and sums to the eager one.
"""

from __future__ import annotations

import pytest
import torch

from fedaegis.client.robustness import evaluate_robustness
from fedaegis.client.site import evaluation_subset, site_data
from fedaegis.shared.data.types import LazyImages
from fedaegis.shared.models.tasks import build_task_model, model_meta
from fedaegis.shared.results.robustness import decode
from fedaegis.shared.run.config import RunConfig
from fedaegis.shared.threats import backdoor_counts
from fedaegis.shared.training import data_to, evaluate_local


@pytest.fixture
def isolated_site(tmp_path, monkeypatch):
    """A simulated site under the built-in policy, its secret in a fresh state folder."""
    monkeypatch.delenv("FEDAEGIS_SITE_POLICY", raising=False)
    monkeypatch.setenv("FEDAEGIS_HOME", str(tmp_path / "home"))
    return {"partition-id": 0, "num-partitions": 2}


def test_lazy_test_split_gives_the_eager_figures(small_pneumonia, isolated_site, device, monkeypatch):
    """Clean evaluation, FGSM and PGD on the stored split equal those on the split made whole,
    and nothing made the split whole along the way (only the attack subset's batches)."""
    # 28 px stored, 32 px inputs: every batch goes through the MONAI resize and padding
    cfg = RunConfig(dataset=small_pneumonia, image_size=32, num_sites=2, attacks="fgsm,pgd",
                    attack_samples=0, epsilons="2/255,8/255", attack_pgd_steps=3)
    data = site_data(cfg, isolated_site)
    assert isinstance(data.test.images, LazyImages)
    assert len(data.test) > 256  # more than one evaluation batch, more than the policy's smallest size
    torch.manual_seed(0)
    model = build_task_model(model_meta(cfg)).to(device)

    made: list[int] = []
    materialize = LazyImages.materialize

    def recorded(self: LazyImages) -> torch.Tensor:
        made.append(len(self))
        return materialize(self)

    def figures(test) -> tuple[dict, dict, dict]:
        clean = evaluate_local(model, data_to(test, device))
        subset = data_to(evaluation_subset(test, cfg.attack_samples, cfg, isolated_site), device)
        attacks = evaluate_robustness(model, subset, cfg, seed=11)
        moved = data_to(test, device)
        backdoor = backdoor_counts(model, moved.images, moved.labels, target_class=0)
        return clean, attacks, backdoor

    monkeypatch.setattr(LazyImages, "materialize", recorded)
    lazy = figures(data.test)
    assert made == []  # every consumer drew batches
    monkeypatch.setattr(LazyImages, "materialize", materialize)
    eager = figures(data.test.eager())  # the reference: the split as one float32 tensor, as sites held it before
    assert lazy == eager
    clean, attacks, backdoor = lazy
    assert clean["num-examples"] == len(data.test) and clean["loss-sum"] > 0
    assert {label for label, _ in decode(attacks)} == {"fgsm", "pgd"}
    assert backdoor["backdoor.num-examples"] == int((data.test.labels != 0).sum())


def test_lazy_images_deliver_batches_on_their_device(small_pneumonia, device):
    """``to(device)`` keeps the stored images where they are; each batch arrives on the device."""
    from fedaegis.shared.data import load_site_data

    data = load_site_data(small_pneumonia, split="test", image_size=(32, 32))
    moved = data_to(data, torch.device(device))
    assert isinstance(moved.images, LazyImages) and moved.images.stored is data.images.stored
    batch = moved.images[torch.arange(5, device=device)]
    assert batch.device.type == torch.device(device).type
    assert torch.equal(batch.cpu(), data.images[:5])
    assert torch.equal(moved.images.take([3, 1]).materialize().cpu(), data.images[[3, 1]])


def test_split_makes_each_batch_when_it_is_drawn():
    """``split`` holds no batch: iterating a 624-image split at 224 px makes one batch at a time."""
    from fedaegis.shared.data import load_site_data

    data = load_site_data("embedded:pneumoniamnist", split="test", image_size=(224, 224))
    made: list[int] = []

    def counted(stored: torch.Tensor) -> torch.Tensor:  # the site's own pipeline, its calls counted
        made.append(len(stored))
        return data.images.pipeline(stored)

    images = LazyImages(data.images.stored, counted)
    made.clear()
    batches = images.split(256)
    assert len(batches) == 3 and made == []
    sizes = []
    for batch in batches:
        sizes.append(len(batch))
        assert made == sizes  # this batch was made now, none ahead of it
    assert sizes == [256, 256, 112] and torch.equal(batches[-1], data.images[512:])


@pytest.mark.parametrize("detector", ["mahalanobis", "kd-bu"])
def test_defence_comparison_on_the_stored_split_gives_the_eager_figures(small_pneumonia, isolated_site, detector,
                                                                         monkeypatch):
    """Hardening table, detector histograms, routed transfer and adaptive rows: the same counts from the
    stored split as from the split made whole; only the calibration subset (at most 256) is made whole."""
    from fedaegis.client.defence_comparison import MAX_COMBINER_FIT, evaluate_defences

    cfg = RunConfig(dataset=small_pneumonia, image_size=16, num_sites=2, defence_models="none,pgd-at",
                    detector=detector, epsilons="8/255", attack_samples=32)
    data = site_data(cfg, isolated_site)
    torch.manual_seed(0)
    model = build_task_model(model_meta(cfg))

    made: list[int] = []
    materialize = LazyImages.materialize

    def recorded(self: LazyImages) -> torch.Tensor:
        made.append(len(self))
        return materialize(self)

    monkeypatch.setattr(LazyImages, "materialize", recorded)
    lazy = evaluate_defences(model, cfg, data.train, data.test, seed=3, node_config=isolated_site)
    assert all(n <= MAX_COMBINER_FIT for n in made) and len(made) == (detector == "kd-bu")
    monkeypatch.setattr(LazyImages, "materialize", materialize)
    eager = evaluate_defences(model, cfg, data.train, data.test.eager(), seed=3, node_config=isolated_site)
    assert lazy == eager
    assert {"defence.adaptive.routed.n-count", "defence.transfer.routed.routed-count"} <= set(lazy)
    assert any(k.startswith(f"detector.{detector}.eps=") for k in lazy)


def test_large_inputs_are_evaluated_and_attacked_in_smaller_batches():
    """A batch's activations set a site's peak memory: at 224 px evaluation and attacks draw at
    most 41 images a batch (2**21 input values), while 28 px keeps its 256 and 128."""
    from fedaegis.shared.attacks import evaluate_attacks
    from fedaegis.shared.data.types import BATCH_VALUES, ImageSet, batch_for
    from fedaegis.shared.models import build_model

    assert (batch_for((1, 28, 28), 256), batch_for((1, 28, 28), 128)) == (256, 128)
    assert batch_for((1, 224, 224), 256) == 41 and batch_for((3, 224, 224), 128) == 13
    assert batch_for((1, 224, 224), 256) * 224 * 224 <= BATCH_VALUES
    stored = torch.randint(0, 256, (90, 1, 224, 224), dtype=torch.uint8)
    data = ImageSet(LazyImages(stored, lambda x: x.float() / 255), torch.randint(0, 2, (90,)), 2, "synthetic")
    model = build_model("cnn", in_channels=1, num_classes=2, norm="group", image_size=224)
    seen: list[int] = []
    model.register_forward_pre_hook(lambda _m, args: seen.append(int(args[0].shape[0])))
    assert evaluate_local(model, data)["num-examples"] == 90
    assert max(seen) == 41 and sum(seen) == 90
    seen.clear()
    (cell,) = evaluate_attacks(model, data, ["fgsm"], [2 / 255]).values()
    assert cell["n"] == 90 and max(seen) == 41
