"""A site's part of transfer attacks (run config ``transfer``): its own model as the attacker's surrogate.

An attacker inside the federation holds a model close to the deployed one: its own, before
aggregation. In a training round the site keeps the model it sent (:func:`keep_sent_model`, in
Flower's ``Context.state``: the node's memory, never sent); in the evaluation of a round
``attack-rounds`` names it crafts PGD examples on that model and on the global model it
receives, and scores each on both (:func:`evaluate_transfer`). With ``defence-models`` the
members of the global comparison are the models instead. Only counts leave
(:mod:`fedaegis.shared.results.transfer`); the examples and every per-image result stay.
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context
from torch import nn

from ..shared.attacks.transfer import transfer_matrix
from ..shared.data import ImageSet
from ..shared.models.members import MemberSet
from ..shared.models.tasks import build_task_model, model_meta
from ..shared.results.transfer import GLOBAL, LOCAL, encode, models
from ..shared.run.config import RunConfig

MODEL_STATE = "transfer-local-model"  # Context.state: the model this site sent in its last training round
ROUND_STATE = "transfer-local-round"  # ... and that round's number


def wanted(cfg: RunConfig, server_round: int) -> bool:
    """Whether this round's evaluation runs transfer attacks (the rounds ``attack-rounds`` names)."""
    return cfg.transfer and cfg.task == "classification" and cfg.attacks_in_round(server_round)


def keep_sent_model(context: Context, cfg: RunConfig, server_round: int, state: dict[str, torch.Tensor]) -> None:
    """Keep the model this site sent in ``server_round`` (CPU tensors) where its evaluation finds it.

    Only in rounds whose evaluation runs transfer attacks, and not in a defence comparison
    (its members are the models); a model of an earlier round is dropped, never used.
    """
    if wanted(cfg, server_round) and not cfg.defence_models:
        context.state[MODEL_STATE] = ArrayRecord(state)
        context.state[ROUND_STATE] = ConfigRecord({"round": server_round})
    else:
        for key in (MODEL_STATE, ROUND_STATE):
            if key in context.state:
                del context.state[key]


def _sent_model(context: Context, cfg: RunConfig, server_round: int) -> nn.Module | None:
    """The model this site sent in ``server_round``, or None (it did not train in this round)."""
    kept = context.state[ROUND_STATE] if ROUND_STATE in context.state else None
    if kept is None or int(kept["round"]) != server_round:  # type: ignore[index, arg-type]
        return None
    local = build_task_model(model_meta(cfg))
    local.load_state_dict(context.state[MODEL_STATE].to_torch_state_dict())  # type: ignore[union-attr]
    return local


def evaluate_transfer(global_model: nn.Module, cfg: RunConfig, data: ImageSet, context: Context, server_round: int,
                      seed: int) -> dict[str, int]:
    """The transfer counts of this round on ``data`` (the site's evaluation set, on the model's device).

    A site that did not train in this round sends every key as zero, so every site's reply
    has the same names (secure aggregation) and the totals count only sites that measured.
    """
    names = models(cfg)
    if isinstance(global_model, MemberSet):
        compared: dict[str, nn.Module] = dict(global_model.members.items())
    else:
        local = _sent_model(context, cfg, server_round)
        if local is None:
            return encode({}, names, cfg.epsilon_values)
        device = next(iter(global_model.parameters())).device
        compared = {LOCAL: local.to(device), GLOBAL: global_model}
    torch.manual_seed(seed)
    counts = transfer_matrix(compared, (data.images, data.labels), cfg.epsilon_values, steps=cfg.attack_pgd_steps,
                             seed=seed)
    return encode(counts, names, cfg.epsilon_values)
