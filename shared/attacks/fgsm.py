"""FGSM (Goodfellow et al., 2015): one signed-gradient step of the full budget."""

from __future__ import annotations

import torch
from torch import nn

from .base import Attack, Details, Run, ThreatModel
from .losses import ce_objective
from .ops import input_grad, normalize


class FGSM(Attack):
    """Single step ``x + eps * sign(grad)`` (Linf) or ``x + eps * grad/||grad||`` (L2).

    The cheapest attack: a lower bound on what a gradient-based adversary achieves.
    Its one gradient is taken at the clean input, so the forward pass of that
    gradient is also the clean pass (one forward/backward and one forward in all).
    """

    name = "fgsm"

    def __init__(self, threat: ThreatModel | None = None, *, seed: int = 0) -> None:
        super().__init__(threat, seed=seed, early_stop=False)

    def details(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                clean_logits: torch.Tensor | None = None) -> Details:
        if clean_logits is not None:  # the caller already paid for the clean pass
            return super().details(model, x, y, clean_logits=clean_logits)
        # the model is in eval mode (attack_mode), so each sample's gradient is its own
        # whatever else is in the batch: the misclassified ones only cost their share
        # of the one backward pass
        xg = x.detach().requires_grad_(True)
        logits = model(xg)
        target = self.targets(logits.detach(), y)
        (g,) = torch.autograd.grad(ce_objective(logits, y, target).sum(), xg)

        def run(idx: torch.Tensor, _target: torch.Tensor | None, _gen: torch.Generator) -> Run:
            return self._step(x[idx], g[idx])

        return self._attack_correct(model, x, y, logits.detach(), run)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None, logits: torch.Tensor, gen: torch.Generator) -> Run:
        g, _, _ = input_grad(model, x, lambda z: ce_objective(z, y, target))
        return self._step(x, g)

    def _step(self, x: torch.Tensor, g: torch.Tensor) -> Run:
        """The one full-budget step (projected by the base class); the prediction there is
        left to the base class. Queries: the gradient and that prediction."""
        return Run(x + normalize(g, self.threat.norm) * self.threat.eps, None, 2 * x.shape[0])
