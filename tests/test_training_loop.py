"""The one training loop: parts composed from the config, DP-SGD's class weights and optimiser,
the site's device and mixed precision (fast, synthetic data; the device tests also run on CUDA)."""

from __future__ import annotations

import pytest
import torch

import fedaegis.shared.training as training
import fedaegis.shared.training.loop as loop
from fedaegis.client.app import app
from fedaegis.client.classification_round import train_classifier_round
from fedaegis.shared.run.config import ConfigError, RunConfig
from fedaegis.shared.data import ImageSet
from fedaegis.shared.hardening import build_hardening
from fedaegis.shared.models import SmallCNN
from fedaegis.shared.reply.protocol import check_metrics
from fedaegis.shared.training import DPSGD, balanced_weights, resolve_device, train_classifier
from fedaegis.tests.site_messages import ask

SMALL = {"in-channels": 1, "num-classes": 3, "image-size": 12, "local-epochs": 1}


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch, tmp_path):
    monkeypatch.setenv("FEDAEGIS_HOME", str(tmp_path / "home"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _toy(n: int = 48, seed: int = 0, skew: bool = False) -> ImageSet:
    gen = torch.Generator().manual_seed(seed)
    y = torch.tensor([0] * 30 + [1] * 10 + [2] * 8)[:n] if skew else torch.arange(n) % 3
    x = (torch.rand(n, 1, 12, 12, generator=gen) * 0.5 + y[:, None, None, None] * 0.2).clamp(0, 1)
    return ImageSet(x, y, 3, "toy")


def _cnn() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN(1, 3, 2, "group", width=8)


def _dp_weights(weights: torch.Tensor | None) -> list[torch.Tensor]:
    model = _cnn()
    # a clipping bound no sample reaches: per-sample clipping would otherwise rescale every
    # gradient to the same norm and so undo any loss weight (see README, DP-SGD)
    train_classifier(model, _toy(skew=True), privacy=DPSGD(8.0, max_grad_norm=1e3), class_weights=weights,
                     epochs=1, batch_size=16, lr=1e-2, optimizer="sgd", seed=1)
    return [p.detach().clone() for p in model.parameters()]


def test_dp_sgd_honours_class_weights():
    """The same DP-SGD run (same samples, same noise) moves differently once the classes are weighted."""
    plain, skewed = _dp_weights(None), _dp_weights(balanced_weights(_toy(skew=True).labels, 3))
    assert any(not torch.allclose(a, b, atol=1e-4) for a, b in zip(plain, skewed, strict=True))


def test_the_dp_round_weights_classes_and_uses_the_momentum_sgd_of_the_plain_path(monkeypatch):
    seen: dict = {}
    real_fit, real_opt = training.train_classifier, loop.make_optimizer

    def spy_fit(*args, **kwargs):
        seen.update(kwargs)
        return real_fit(*args, **kwargs)

    def spy_opt(*args, **kwargs):
        seen.setdefault("optimizers", []).append(real_opt(*args, **kwargs))
        return seen["optimizers"][-1]

    monkeypatch.setattr(training, "train_classifier", spy_fit)
    monkeypatch.setattr(loop, "make_optimizer", spy_opt)
    data = _toy(skew=True)
    for dp in (0.0, 8.0):
        seen.clear()
        cfg = RunConfig.from_flower({**SMALL, "dp-epsilon": dp, "optimizer": "sgd", "class-weighting": "balanced"})
        _, metrics = train_classifier_round(_cnn(), cfg, data, {"partition-id": 0}, 0, 1)
        assert torch.allclose(seen["class_weights"], balanced_weights(data.labels, 3))
        assert (seen["privacy"] is not None) == (dp > 0) and ("dpsgd.epsilon-sum" in metrics) == (dp > 0)
        (opt,) = seen["optimizers"]
        assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.9


def test_hardening_is_a_loss_part_of_the_same_loop():
    """PGD-AT through the one loop crafts adversarial batches: its training loss exceeds the clean one."""
    plain = train_classifier(_cnn(), _toy(), epochs=1, batch_size=16, lr=1e-3, seed=0)
    hard = train_classifier(_cnn(), _toy(), build_hardening("pgd-at", eps=16 / 255, steps=2), epochs=1,
                            batch_size=16, lr=1e-3, seed=0)
    assert check_metrics(hard) == [] and hard["num-examples"] == plain["num-examples"] == 48
    assert hard["train-loss-sum"] > plain["train-loss-sum"]


def test_bf16_mixed_precision_trains_on_the_cpu_and_keeps_float32_weights():
    model = _cnn()
    before = [p.detach().clone() for p in model.parameters()]
    out = train_classifier(model, _toy(), epochs=1, batch_size=16, lr=1e-3, amp="bf16")
    assert check_metrics(out) == [] and out["train-loss-sum"] > 0
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_bad_device_and_amp_are_named():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("tpu", "cuda:99", "gpu0"):
        with pytest.raises(ValueError, match="^device:"):
            resolve_device(bad)
    with pytest.raises(ValueError, match="^amp:"):
        train_classifier(_cnn(), _toy(), epochs=1, batch_size=16, lr=1e-3, amp="fp16", device="cpu")
    with pytest.raises(ConfigError, match="'amp'"):
        RunConfig(amp="fp8")
    with pytest.raises(ConfigError, match="'amp'"):
        RunConfig(amp="bf16", dp_epsilon=8.0)
    with pytest.raises(ConfigError, match="'hardening'"):
        RunConfig(hardening="pgd-at", dp_epsilon=8.0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is refused only where there is no CUDA")
def test_fp16_without_cuda_is_refused_at_preflight_and_client_gpus_without_gpu():
    from fedaegis.orchestration.simulation import SimulationResources, check_client_gpus
    from fedaegis.shared.run.preflight import PreflightError, preflight

    with pytest.raises(PreflightError, match="^run config 'amp' = 'fp16': needs a CUDA device"):
        preflight(RunConfig(amp="fp16"), 2, database=False)
    for gpus, why in ((0.25, "this machine has 0 CUDA GPU"), (1.5, "must be a share of one GPU")):
        with pytest.raises(ValueError, match=f"^--client-gpus {gpus:g}: {why}"):
            check_client_gpus(SimulationResources(client_gpus=gpus))


@pytest.mark.parametrize("gpus", [0.0, pytest.param(0.25, marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device here")])])
def test_client_gpus_reach_ray_and_zero_keeps_simulated_sites_on_the_cpu(tmp_path, gpus):
    """``--client-gpus`` is each actor's Ray GPU share; at 0 the sites cannot see a GPU (else they
    would take the default device, the first GPU, without Ray reserving any of it)."""
    from fedaegis.orchestration.simulation import SimulationResources, _runtime_env, federation_config

    resources = SimulationResources(num_cpus=2, client_gpus=gpus)
    fed = federation_config(resources, 2)
    assert fed["client-resources-num-gpus"] == gpus
    env = _runtime_env(resources, tmp_path / "exchanges.log", None)
    if gpus:
        assert "init-args-num-gpus" not in fed and env.get("CUDA_VISIBLE_DEVICES") != ""
    else:
        assert fed["init-args-num-gpus"] == 0 and env["CUDA_VISIBLE_DEVICES"] == ""


def test_a_site_trains_and_attacks_on_its_device_and_replies_in_cpu_tensors(device):
    """The node config's device is the site's; what comes back never depends on it."""
    site = {"partition-id": 0, "num-partitions": 8, "device": device}
    config = {"local-epochs": 1, "attacks": "fgsm", "attack-samples": 32, "epsilons": "8/255", "attack-rounds": "all"}
    reply = ask(app, "train", config, site)
    assert not reply.has_error(), reply.error
    state = reply.content["arrays"].to_torch_state_dict()
    assert state and all(t.device.type == "cpu" for t in state.values())
    assert reply.content["metrics"]["train-correct"] > 0
    evaluation = ask(app, "evaluate", config, site, state)
    assert not evaluation.has_error(), evaluation.error
    metrics = evaluation.content["metrics"]
    assert metrics["correct"] > 0 and any(k.startswith("attack.fgsm") or "fgsm" in k for k in metrics)


def test_dp_sgd_and_hardening_run_on_the_device(device):
    data = _toy()
    for objective, privacy in ((build_hardening("trades", steps=1), None), (None, DPSGD(8.0))):
        model = _cnn()
        out = train_classifier(model, data, objective, privacy=privacy, epochs=1, batch_size=16, lr=1e-3,
                               device=device)
        assert check_metrics(out) == [] and all(isinstance(v, (int, float)) for v in out.values())
        assert all(p.device.type == device for p in model.parameters())


def test_segmentation_trains_and_is_attacked_on_the_device(device):
    from fedaegis.shared.segmentation import AdversarialTraining, SegmentationSet, build_segmenter
    from fedaegis.shared.training import train_segmenter

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 16, 16, generator=gen)
    data = SegmentationSet(images=x, masks=(x > 0.6).long()[:, 0], volume_index=torch.arange(6) // 2,
                           patient_ids=("a", "b", "c"), num_classes=2)
    torch.manual_seed(0)
    model = build_segmenter("unet", num_classes=2, channels=(4, 8), num_res_units=0)
    out = train_segmenter(model, data, batch_size=3, adversarial=AdversarialTraining(steps=1), device=device)
    assert check_metrics(out) == [] and out["seg.train.adversarial-count"] == 6
    assert all(p.device.type == device for p in model.parameters())
    # and its evaluation under every segmentation attack, on the device's copy of the volumes
    from fedaegis.shared.segmentation.evaluation import DEFAULT_ATTACKS, evaluate_segmentation
    from fedaegis.shared.training import data_to

    counts = evaluate_segmentation(model, data_to(data, torch.device(device)), DEFAULT_ATTACKS, [8 / 255], steps=2,
                                   target="remove:1")  # two classes: the targeted attacks erase the foreground
    assert check_metrics({"num-examples": 6, **counts}) == []
    assert all(isinstance(v, (int, float)) for v in counts.values())
    assert all(any(f".{a}." in k for k in counts) for a in DEFAULT_ATTACKS), sorted(counts)[:8]


@pytest.mark.parametrize("detector", ["mahalanobis", "kd-bu"])
def test_detectors_defence_members_and_inversion_audits_run_on_the_device(device, detector):
    """The rest of a site's work on its device: hardened members, a detector and its router, the audit."""
    from fedaegis.client.classification_round import _audit, train_members
    from fedaegis.client.defence_comparison import evaluate_defences
    from fedaegis.shared.models.tasks import build_task_model, model_meta
    from fedaegis.shared.training import data_to

    cfg = RunConfig.from_flower({"in-channels": 1, "num-classes": 3, "image-size": 12, "local-epochs": 1,
                                 "defence-models": "none,pgd-at", "detector": detector, "hardening-steps": 1,
                                 "epsilons": "8/255", "attack-samples": 12, "inversion-audit": "idlg",
                                 "inversion-iterations": 5})
    on = torch.device(device)
    torch.manual_seed(0)
    model = build_task_model(model_meta(cfg)).to(on)
    train, test = data_to(_toy(), on), data_to(_toy(30, seed=1), on)
    assert check_metrics(train_members(model, cfg, train, seed=0, device=on)) == []
    assert all(p.device.type == device for p in model.parameters())
    counts = {"num-examples": len(test), **evaluate_defences(model, cfg, train, test, seed=0)}
    assert check_metrics(counts) == [] and all(isinstance(v, (int, float)) for v in counts.values())
    from fedaegis.shared.detection.roc import PREFIX

    assert any(k.startswith(f"{PREFIX}.{detector}.eps=") and "-bin" in k for k in counts)  # its histograms
    audit = {"num-examples": len(train), **_audit(model.members["none"], cfg, train, seed=0)}  # type: ignore[index]
    assert len(audit) > 1 and check_metrics(audit) == [] and all(isinstance(v, (int, float)) for v in audit.values())
