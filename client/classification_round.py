"""One training round of a classification site: threats it may play, audits, defences, training.

In simulation the first ``num-malicious`` partitions are the compromised sites; no
other site and not the server is told which. A malicious site poisons its own
training data (BadNets backdoor or label flipping) and may boost its update
(model replacement). Every site can audit its own update for gradient inversion
before sending it, and defend it with DP-SGD (Opacus) or update pruning; ``hardening``
trains adversarially (PGD-AT, TRADES, fast FGSM, MART, or SSAT, which also learns from
the images whose labels ``labelled-fraction`` withholds) instead of plainly. All of it is
one loop (:mod:`fedaegis.shared.training`) with parts chosen here from the config.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..shared.run.config import RunConfig
from ..shared.data import ImageSet
from ..shared.models.members import MemberSet
from ..shared import training
from ..shared.training import CrossEntropy, DPSGD, Objective, balanced_weights
from ..shared.training.transforms import apply_data, apply_updates, data_transforms, update_transforms


def is_malicious(cfg: RunConfig, node_config: Mapping[str, object]) -> bool:
    """Only a simulated site (a partition id, no data of its own) below ``num-malicious`` plays the threat."""
    from ..shared.site.policy import is_simulated

    if cfg.threat == "none" or not is_simulated(node_config):
        return False
    return int(node_config["partition-id"]) < cfg.num_malicious  # type: ignore[arg-type]


def labelled_split(cfg: RunConfig, data: ImageSet) -> tuple[ImageSet, torch.Tensor | None]:
    """(labelled, unlabelled images): a site with few labels keeps ``labelled-fraction`` of them.

    The rest of its training images stay as an unlabelled pool, which SSAT learns from and
    every other method ignores; the split is seeded, so it is the same in every round.
    """
    if cfg.labelled_fraction >= 1:
        return data, None
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(cfg.seed * 7_919 + 17))
    keep = max(2, round(cfg.labelled_fraction * len(data)))
    return data.subset(perm[:keep].sort().values), data.images[perm[keep:].sort().values]


def _audit(model: nn.Module, cfg: RunConfig, data: ImageSet, seed: int) -> dict[str, float | int]:
    """Gradient-inversion audit of the site's own update, under the site's own defence."""
    from ..shared.privacy import dp_sgd_step_gradients, inversion_audit, prune_smallest

    device = next(iter(model.parameters())).device
    x, y = data.images[: cfg.inversion_images].to(device), data.labels[: cfg.inversion_images].to(device)
    kw = {"method": cfg.inversion_audit, "iterations": cfg.inversion_iterations, "seed": seed}
    if cfg.dp_epsilon > 0:
        grads, _ = dp_sgd_step_gradients(model, x, y, target_epsilon=cfg.dp_epsilon, target_delta=cfg.dp_delta,
                                         max_grad_norm=cfg.dp_max_grad_norm, seed=seed)
        return inversion_audit(model, x, y, gradients=grads, **kw)
    defence = (lambda g: prune_smallest(g, cfg.prune_fraction)) if cfg.prune_fraction else None
    return inversion_audit(model, x, y, defence=defence, **kw)


def class_weights(cfg: RunConfig, data: ImageSet) -> torch.Tensor | None:
    """``balanced`` inverse-frequency weights of the site's labels, or None (``class-weighting = none``)."""
    return balanced_weights(data.labels, cfg.num_classes) if cfg.class_weighting == "balanced" else None


def build_objective(name: str, cfg: RunConfig) -> Objective:
    """The loss part for hardening ``name`` (``none``: plain, class-weighted cross-entropy) at the
    run's ``hardening-eps`` and ``hardening-steps`` (fast FGSM has one step), with its own
    ``hardening.<name>.*`` parameters."""
    if name == "none":
        return CrossEntropy()
    from ..shared.hardening import build_hardening

    if name == "fast-fgsm":
        return build_hardening(name, eps=cfg.hardening_eps, **cfg.hardening_params(name))
    return build_hardening(name, eps=cfg.hardening_eps, steps=cfg.hardening_steps, **cfg.hardening_params(name))


def fit_options(cfg: RunConfig, data: ImageSet, unlabelled: torch.Tensor | None, seed: int,
                device: torch.device | str = "cpu") -> dict:
    """The loop's settings shared by every model a site trains: schedule, optimiser, class weights, device."""
    from .site_log import progress

    return {"epochs": cfg.local_epochs, "batch_size": cfg.batch_size, "lr": cfg.learning_rate,
            "optimizer": cfg.optimizer, "class_weights": class_weights(cfg, data), "unlabelled": unlabelled,
            "device": device, "amp": cfg.amp, "seed": seed, "progress": progress("training")}


def train_classifier_round(
    model: nn.Module, cfg: RunConfig, data: ImageSet, node_config: Mapping[str, object], seed: int, server_round: int,
    device: torch.device | str = "cpu",
) -> tuple[dict[str, torch.Tensor], dict[str, float | int]]:
    """Train in place (on ``device``); return the state to send and the reply's counts and sums.

    The round composes the loop's parts from the config: data transforms (a simulated
    threat's poisoning), the objective (``hardening``), the step (DP-SGD when
    ``dp-epsilon`` > 0) and update transforms (pruning, a threat's boosting).
    """
    from ..shared.site.policy import check_train_size, site_policy

    model.to(device)
    global_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    malicious = is_malicious(cfg, node_config)
    train_set, unlabelled = labelled_split(cfg, apply_data(data, data_transforms(cfg, malicious, seed)))
    check_train_size(site_policy(node_config), len(train_set))  # no update of a handful of images leaves
    metrics: dict[str, float | int] = {}
    if cfg.inversion_audit and server_round == 1:  # the first update is the most revealing
        metrics.update(_audit(model, cfg, data, seed))
    if cfg.defence_models:  # a defence comparison: every member, plain or with its hardening
        metrics.update(train_members(model, cfg, train_set, seed, unlabelled, device))  # type: ignore[arg-type]
    else:
        privacy = (DPSGD(cfg.dp_epsilon, cfg.dp_delta, cfg.dp_max_grad_norm, noise_seed=seed + 1)
                   if cfg.dp_epsilon > 0 else None)
        metrics.update(training.train_classifier(model, train_set, build_objective(cfg.hardening, cfg),
                                                 privacy=privacy, **fit_options(cfg, train_set, unlabelled, seed,
                                                                                device)))
        if privacy is not None:
            metrics["dpsgd.epsilon-sum"] = privacy.epsilon
    state = apply_updates(global_state, model.state_dict(), update_transforms(cfg, malicious))
    return state, metrics


def backdoor_metrics(model: nn.Module, cfg: RunConfig, data: ImageSet) -> dict[str, float | int]:
    """Share of triggered non-target test images classified as the target (counts)."""
    if cfg.threat != "backdoor":
        return {}
    from ..shared.threats import Trigger, backdoor_counts

    return backdoor_counts(model, data.images, data.labels, target_class=cfg.target_class,
                           trigger=Trigger(size=cfg.trigger_size))


def train_members(model: MemberSet, cfg: RunConfig, data: ImageSet, seed: int, unlabelled: torch.Tensor | None = None,
                  device: torch.device | str = "cpu") -> dict[str, float | int]:
    """Train every member in place, each with its own objective and the round's other parts;
    ``member.<name>.train-*`` sums, the first member's also unprefixed."""
    options = fit_options(cfg, data, unlabelled, seed, device)
    out: dict[str, float | int] = {"num-examples": len(data)}
    for i, (name, member) in enumerate(model.members.items()):
        torch.manual_seed(seed + i)
        counts = training.train_classifier(member, data, build_objective(name, cfg), **options)
        for key in ("train-loss-sum", "train-correct"):
            out[f"member.{name}.{key}"] = counts[key]
            if i == 0:
                out[key] = counts[key]
    return out
