"""Defence comparison parts without a federation: class-weighted hardening losses, the member set,
its run config, the wire format and the rows the server stores (fast, synthetic data)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fedaegis.shared.run.config import ConfigError, RunConfig
from fedaegis.shared.data import ImageSet
from fedaegis.shared.hardening import build_hardening
from fedaegis.shared.hardening.base import weighted_mean
from fedaegis.shared.models import SmallCNN
from fedaegis.shared.reply.protocol import check_metrics
from fedaegis.shared.training import balanced_weights, train_classifier

METHODS = {"pgd-at": {"steps": 2}, "trades": {"steps": 2}, "mart": {"steps": 2}, "fast-fgsm": {}}
SMALL = {"in-channels": 1, "num-classes": 3, "image-size": 12}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _toy(n: int = 48, classes: int = 3, size: int = 12, seed: int = 0) -> ImageSet:
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = (torch.rand(n, 1, size, size, generator=gen) * 0.5 + y[:, None, None, None] * 0.2).clamp(0, 1)
    return ImageSet(x, y, classes, "toy")


def _loss(name: str, weight: torch.Tensor | None) -> float:
    torch.manual_seed(0)
    model = SmallCNN(1, 3, 2, "group", width=8)
    data = _toy(12)
    method = build_hardening(name, eps=8 / 255, **METHODS[name])
    loss, _ = method.loss(model, data.images, data.labels, torch.Generator().manual_seed(1), weight=weight)
    return float(loss.detach())


def test_weighted_mean_is_what_cross_entropy_does_with_class_weights():
    logits, y = torch.randn(10, 3), torch.tensor([0, 1, 2, 2, 2, 2, 1, 0, 2, 2])
    w = balanced_weights(y, 3)
    per_sample = F.cross_entropy(logits, y, reduction="none")
    assert weighted_mean(per_sample, y, w) == pytest.approx(float(F.cross_entropy(logits, y, weight=w)))
    assert weighted_mean(per_sample, y, None) == pytest.approx(float(per_sample.mean()))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_hardening_loss_takes_class_weights(name: str):
    plain = _loss(name, None)
    assert _loss(name, torch.ones(3)) == pytest.approx(plain, rel=1e-5)  # uniform weights change nothing
    assert _loss(name, torch.tensor([5.0, 0.1, 0.1])) != pytest.approx(plain, rel=1e-3)


def test_train_adversarial_passes_the_weights_and_checks_them():
    data = _toy()
    counts = train_classifier(SmallCNN(1, 3, 2, "group", width=8), data, build_hardening("pgd-at", steps=1),
                              epochs=1, batch_size=16, lr=1e-3, class_weights=balanced_weights(data.labels, 3))
    assert check_metrics(counts) == [] and counts["num-examples"] == len(data)
    with pytest.raises(ValueError, match="class_weights"):
        train_classifier(SmallCNN(1, 3, 2, "group", width=8), data, build_hardening("pgd-at", steps=1),
                         epochs=1, batch_size=16, lr=1e-3, class_weights=torch.ones(2))


def test_hardening_site_uses_balanced_weights(monkeypatch):
    """``hardening`` runs (not only the comparison) weight the loss when class-weighting is balanced."""
    import fedaegis.shared.training as training
    from fedaegis.client.classification_round import train_classifier_round

    seen = {}
    real = training.train_classifier

    def spy(*args, **kwargs):
        seen["w"] = kwargs.get("class_weights")
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "train_classifier", spy)
    labels = torch.tensor([0] * 30 + [1] * 10 + [2] * 8)
    data = ImageSet(_toy(48).images, labels, 3, "toy")
    for weighting, expected in (("balanced", balanced_weights(labels, 3)), ("none", None)):
        cfg = RunConfig.from_flower({**SMALL, "hardening": "pgd-at", "hardening-steps": 1, "local-epochs": 1,
                                     "class-weighting": weighting})
        train_classifier_round(SmallCNN(1, 3, 2, "group"), cfg, data, {"partition-id": 0}, 0, 1)
        assert (seen["w"] is None) if expected is None else torch.allclose(seen["w"], expected)


def test_member_set_is_one_model_with_prefixed_members():
    from fedaegis.client.classification_round import train_members
    from fedaegis.shared.models.members import MemberSet
    from fedaegis.shared.models.tasks import build_task_model, model_meta

    cfg = RunConfig.from_flower({**SMALL, "defence-models": "none,fast-fgsm,trades", "local-epochs": 1,
                                 "hardening-steps": 1})
    model = build_task_model(model_meta(cfg))
    assert isinstance(model, MemberSet) and model.names == ("none", "fast-fgsm", "trades")
    keys = list(model.state_dict())
    assert all(k.split(".")[:1] == ["members"] for k in keys)
    assert {k.split(".")[1] for k in keys} == {"none", "fast-fgsm", "trades"}
    x = _toy(4).images
    assert torch.equal(model(x), model.members["none"](x))  # it predicts as its first member
    before = {k: v.clone() for k, v in model.state_dict().items()}
    counts = train_members(model, cfg, _toy(), seed=0)
    assert check_metrics(counts) == []
    assert {"member.none.train-correct", "member.fast-fgsm.train-loss-sum", "member.trades.train-correct"} <= set(counts)
    for name in model.names:  # every member trained
        key = f"members.{name}.head.weight"
        assert not torch.equal(before[key], model.state_dict()[key])


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"defence-models": "none,pgd-at,foo"}, "defence-models"),
        ({"defence-models": "none,none"}, "defence-models"),
        ({"defence-models": "none,pgd-at", "hardening": "trades"}, "defence-models"),
        ({"detector": "lid"}, "detector"),
        ({"detector": "mahalanobis"}, "detector"),  # needs defence-models with none
        ({"defence-models": "none,trades", "detector": "mahalanobis"}, "router-hardened"),
        ({"defence-models": "none,pgd-at", "detector": "kd-bu", "detector-fpr": 0.0}, "detector-fpr"),
    ],
)
def test_bad_defence_config_names_the_field(override, field):
    with pytest.raises(ConfigError, match=f"'{field}'"):
        RunConfig.from_flower(override)


def test_site_evaluation_is_counts_and_the_server_derives_accuracies():
    """Two sites' replies, summed as the server does, give the hardening, defence and detection rows."""
    from fedaegis.client.classification_round import train_members
    from fedaegis.client.defence_comparison import evaluate_defences
    from fedaegis.server.aggregation import sum_metric_records
    from fedaegis.shared.results import BY_NAME, RoundTotals
    from fedaegis.shared.reply.protocol import METRICS_KEY
    from fedaegis.shared.models.tasks import build_task_model, model_meta
    from flwr.app import MetricRecord, RecordDict

    cfg = RunConfig.from_flower({**SMALL, "defence-models": "none,pgd-at", "detector": "mahalanobis",
                                 "epsilons": "2/255,8/255", "attack-samples": 12, "local-epochs": 1,
                                 "hardening-steps": 1})
    model = build_task_model(model_meta(cfg))
    train_members(model, cfg, _toy(), seed=0)
    replies = []
    for site in range(2):
        test = _toy(30, seed=10 + site)
        counts = {"num-examples": len(test), **evaluate_defences(model, cfg, _toy(seed=site), test, seed=site)}
        assert check_metrics(counts) == []
        replies.append(RecordDict({METRICS_KEY: MetricRecord(counts)}))
    totals = sum_metric_records(replies, "num-examples")
    rows = [r for name in ("hardening", "defences", "detection")
            for r in BY_NAME[name].rows(RoundTotals(cfg, None, totals))]
    phases = {r.phase for r in rows}
    assert phases == {"hardening", "defence-transfer", "defence-adaptive", "detection"}
    table = {(r.phase, r.attack, round(r.epsilon * 255), r.name): r.value for r in rows}
    for system in ("none", "pgd-at"):
        assert table[("hardening", system, 8, "n-count")] == 24  # 12 attacked images at each site
        assert 0 <= table[("hardening", system, 8, "robust-accuracy")] <= table[("hardening", system, 8, "clean-accuracy")]
    assert table[("defence-transfer", "routed", 8, "clean-routed-fraction")] <= 1
    assert ("defence-adaptive", "ensemble", 2, "robust-accuracy") in table
    clean = table[("detection", "mahalanobis", 8, "clean-count")]
    assert 0 < clean <= 24 and ("detection", "mahalanobis", 2, "adv-count") in table


@pytest.mark.slow
def test_class_weighting_keeps_pgd_at_from_collapsing_on_imbalanced_pneumonia():
    """Real PneumoniaMNIST (3:1): unweighted PGD-AT predicts the majority class only; a site with
    ``class-weighting = balanced`` also recognises the minority class (about 15 s)."""
    from fedaegis.client.classification_round import train_classifier_round
    from fedaegis.shared.data import load_site_data
    from fedaegis.shared.models import build_model

    train = load_site_data("embedded:pneumoniamnist", split="train")
    test = load_site_data("embedded:pneumoniamnist", split="test")
    train = train.subset(torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:800])
    recall = {}
    for weighting in ("none", "balanced"):
        cfg = RunConfig.from_flower({"hardening": "pgd-at", "hardening-eps": 2 / 255, "hardening-steps": 3,
                                     "local-epochs": 4, "batch-size": 32, "class-weighting": weighting})
        torch.manual_seed(0)
        model = build_model("cnn", in_channels=1, num_classes=2, norm="group")
        state, counts = train_classifier_round(model, cfg, train, {"partition-id": 0}, 0, 1)
        assert check_metrics(counts) == []
        with torch.no_grad():
            pred = model.eval()(test.images).argmax(1)
        recall[weighting] = [float((pred[test.labels == c] == c).float().mean()) for c in (0, 1)]
    print("\nPGD-AT at 2/255, recall (normal, pneumonia):", recall)
    assert recall["none"][0] < 0.1  # collapsed to the majority class (pneumonia)
    assert recall["balanced"][0] >= 0.3 and recall["balanced"][1] >= 0.7
