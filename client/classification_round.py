"""One training round of a classification site: threats it may play, audits, defences, training.

In simulation the first ``num-malicious`` partitions are the compromised sites; no
other site and not the server is told which. A malicious site poisons its own
training data (BadNets backdoor or label flipping) and may boost its update
(model replacement). Every site can audit its own update for gradient inversion
before sending it, and defend it with DP-SGD (Opacus) or update pruning; ``hardening``
trains adversarially (PGD-AT, TRADES, fast FGSM, MART, or SSAT, which also learns from
the images whose labels ``labelled-fraction`` withholds) instead of plainly.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..shared.config import RunConfig
from ..shared.data import ImageSet
from .training import train_local


def is_malicious(cfg: RunConfig, node_config: Mapping[str, object]) -> bool:
    """Only a simulated site (a partition id, no data of its own) below ``num-malicious`` plays the threat."""
    from ..shared.site_policy import is_simulated

    if cfg.threat == "none" or not is_simulated(node_config):
        return False
    return int(node_config["partition-id"]) < cfg.num_malicious  # type: ignore[arg-type]


def _poisoned(cfg: RunConfig, data: ImageSet, seed: int) -> ImageSet:
    from ..shared.threats import Trigger, flip_imageset, poison_imageset

    if cfg.threat == "backdoor":
        return poison_imageset(data, target_class=cfg.target_class, poison_fraction=cfg.poison_fraction,
                               trigger=Trigger(size=cfg.trigger_size), seed=seed)
    return flip_imageset(data, fraction=cfg.poison_fraction, seed=seed)


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

    x, y = data.images[: cfg.inversion_images], data.labels[: cfg.inversion_images]
    kw = {"method": cfg.inversion_audit, "iterations": cfg.inversion_iterations, "seed": seed}
    if cfg.dp_epsilon > 0:
        grads, _ = dp_sgd_step_gradients(model, x, y, target_epsilon=cfg.dp_epsilon, target_delta=cfg.dp_delta,
                                         max_grad_norm=cfg.dp_max_grad_norm, seed=seed)
        return inversion_audit(model, x, y, gradients=grads, **kw)
    defence = (lambda g: prune_smallest(g, cfg.prune_fraction)) if cfg.prune_fraction else None
    return inversion_audit(model, x, y, defence=defence, **kw)


def train_classifier_round(
    model: nn.Module, cfg: RunConfig, data: ImageSet, node_config: Mapping[str, object], seed: int, server_round: int
) -> tuple[dict[str, torch.Tensor], dict[str, float | int]]:
    """Train in place; return the state to send and the reply's counts and sums."""
    global_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    from ..shared.site_policy import check_train_size, site_policy

    malicious = is_malicious(cfg, node_config)
    train_set, unlabelled = labelled_split(cfg, _poisoned(cfg, data, seed) if malicious else data)
    check_train_size(site_policy(node_config), len(train_set))  # no update of a handful of images leaves
    metrics: dict[str, float | int] = {}
    if cfg.inversion_audit and server_round == 1:  # the first update is the most revealing
        metrics.update(_audit(model, cfg, data, seed))
    if cfg.defence_models:  # a defence comparison: every member, plain or with its hardening
        from .defence_comparison import train_members

        metrics.update(train_members(model, cfg, train_set, seed, unlabelled=unlabelled))  # type: ignore[arg-type]
    elif cfg.dp_epsilon > 0:
        from ..shared.privacy import dp_sgd_train

        run = dp_sgd_train(model, train_set.images, train_set.labels, epochs=cfg.local_epochs,
                           batch_size=cfg.batch_size, lr=cfg.learning_rate, target_epsilon=cfg.dp_epsilon,
                           target_delta=cfg.dp_delta, max_grad_norm=cfg.dp_max_grad_norm,
                           optimizer=cfg.optimizer, seed=seed)
        metrics.update(run.metrics)
        metrics["dpsgd.epsilon-sum"] = run.epsilon
    elif cfg.hardening != "none":
        from ..shared.hardening import train_adversarial
        from .defence_comparison import class_weights, hardening_method

        metrics.update(train_adversarial(model, train_set, hardening_method(cfg.hardening, cfg),
                                         epochs=cfg.local_epochs, batch_size=cfg.batch_size, lr=cfg.learning_rate,
                                         optimizer=cfg.optimizer, class_weights=class_weights(cfg, train_set),
                                         unlabelled=unlabelled, seed=seed))
    else:
        metrics.update(train_local(model, train_set, epochs=cfg.local_epochs, batch_size=cfg.batch_size,
                                   lr=cfg.learning_rate, optimizer=cfg.optimizer,
                                   class_weighting=cfg.class_weighting, num_classes=cfg.num_classes, seed=seed))
    state = model.state_dict()
    if cfg.prune_fraction:
        from ..shared.privacy import prune_update

        state = prune_update(global_state, state, cfg.prune_fraction)
    if malicious and cfg.boost != 1:
        from ..shared.threats import boost_update

        state = boost_update(global_state, state, cfg.boost)
    return state, metrics


def backdoor_metrics(model: nn.Module, cfg: RunConfig, data: ImageSet) -> dict[str, float | int]:
    """Share of triggered non-target test images classified as the target (counts)."""
    if cfg.threat != "backdoor":
        return {}
    from ..shared.threats import Trigger, backdoor_counts

    return backdoor_counts(model, data.images, data.labels, target_class=cfg.target_class,
                           trigger=Trigger(size=cfg.trigger_size))
