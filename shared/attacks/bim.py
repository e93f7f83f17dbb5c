"""BIM / I-FGSM (Kurakin et al., 2017): FGSM repeated with small steps, no random start."""

from __future__ import annotations

import torch
from torch import nn

from .base import Attack, Run, ThreatModel, non_negative, positive_int
from .iterative import iterate
from .ops import normalize


class BIM(Attack):
    """``steps`` signed-gradient steps of ``alpha`` (default 1.25 * eps / steps), projected.

    Deterministic: starting from the clean input makes it a reproducible baseline.
    """

    name = "bim"

    def __init__(self, threat: ThreatModel | None = None, *, steps: int = 10,
                 alpha: float | None = None, seed: int = 0, early_stop: bool = True) -> None:
        super().__init__(threat, seed=seed, early_stop=early_stop)
        self.steps = positive_int("steps", steps)
        self.alpha = 1.25 * self.threat.eps / self.steps if alpha is None else non_negative("alpha", alpha)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None, logits: torch.Tensor, gen: torch.Generator) -> Run:
        norm = self.threat.norm
        out = iterate(model, x, y, target, x, norm=norm, eps=self.threat.eps, steps=self.steps,
                      alpha=self.alpha, direction=lambda g, _: normalize(g, norm),
                      early_stop=self.early_stop)
        return Run(out.x_adv, out.pred, out.queries)
