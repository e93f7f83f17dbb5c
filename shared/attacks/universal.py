"""Universal adversarial perturbations: one perturbation for a whole site's data.

Follows the simple iterative method of Hirano & Takemoto (2020), which was shown
on medical images (Hirano et al., 2021): the perturbation is updated with
(targeted) FGSM steps on the inputs it does not fool yet. Here the per-image
updates are aggregated per mini-batch (one signed step of the summed gradient),
which keeps it batched. Untargeted UAPs push away from the clean prediction;
targeted UAPs push every input towards one class.

Reported extras (counts over *all* inputs, not only correctly classified ones):
``fooled`` (prediction changed: the fooling rate's numerator), ``target_hits``
(predicted as the target) and ``target_clean`` (target predicted without it).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .base import (
    Attack,
    AttackResult,
    Run,
    ThreatModel,
    attack_mode,
    check_batch,
    non_negative,
    positive_int,
    require,
    summarize,
)
from .losses import ce_objective
from .ops import input_grad, normalize, project

Batches = tuple[torch.Tensor, torch.Tensor] | Iterable[tuple[torch.Tensor, torch.Tensor]]


class UniversalPerturbation(Attack):
    """Fit with :meth:`fit` on a site's data, then :meth:`attack` applies it to any batch.

    If :meth:`attack` is called before :meth:`fit`, the perturbation is fitted on
    that batch. Targeted mode needs a fixed ``target`` class.
    """

    name = "universal"

    def __init__(self, threat: ThreatModel | None = None, *, epochs: int = 10, batch_size: int = 64,
                 alpha: float | None = None, stop_rate: float = 0.95, seed: int = 0) -> None:
        super().__init__(threat, seed=seed)
        if self.threat.targeted:
            require(self.threat.target is not None, "target",
                    "a targeted universal perturbation needs one fixed target class")
        self.epochs = positive_int("epochs", epochs)
        self.batch_size = positive_int("batch_size", batch_size)
        self.alpha = self.threat.eps / 10 if alpha is None else non_negative("alpha", alpha)
        self.stop_rate = non_negative("stop_rate", stop_rate)
        self.perturbation: torch.Tensor | None = None
        self.fit_queries = 0

    def _batches(self, data: Batches, gen: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
            x, y = check_batch(*data)
            order = torch.randperm(x.shape[0], generator=gen, device=x.device)
            return [(x[i], y[i]) for i in order.split(self.batch_size)]
        return [check_batch(xb, yb) for xb, yb in data]

    def _goal(self, pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return pred == self.threat.target if self.threat.targeted else pred != ref

    def _to_ball(self, v: torch.Tensor) -> torch.Tensor:
        """The perturbation scaled (L2) or clipped (Linf) into the budget; its sign is free
        (``project`` would clip it to [0, 1] as if it were an image)."""
        eps = self.threat.eps
        if self.threat.norm == "linf":
            return v.clamp(-eps, eps)
        n = float(v.norm())
        return v * (eps / n) if n > eps else v

    def _hits(self, model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]],
              refs: list[torch.Tensor], v: torch.Tensor) -> tuple[int, int]:
        """Fitting inputs on which ``v`` reaches the goal, and the queries spent counting them."""
        hits = queries = 0
        for (xb, _), ref in zip(batches, refs):
            with torch.no_grad():
                pred = model((xb + v).clamp(0.0, 1.0)).argmax(1)
            queries += xb.shape[0]
            hits += int(self._goal(pred, ref).sum())
        return hits, queries

    def fit(self, model: nn.Module, data: Batches, *, init: torch.Tensor | None = None) -> torch.Tensor:
        """Fit the universal perturbation on ``(x, y)`` or an iterable of batches; returns it.

        The perturbation that reached the goal on most fitting inputs is kept (checked
        after every epoch, and for the starting point), not the last iterate. ``init``
        (e.g. the perturbation fitted at a smaller budget, projected into this one) is
        the starting point instead of zero: the fit then never does worse on its
        fitting set than ``init`` does.
        """
        gen = torch.Generator().manual_seed(self.seed)
        batches = self._batches(data, gen)
        require(len(batches) > 0, "data", "no batches to fit the universal perturbation on")
        norm, eps = self.threat.norm, self.threat.eps
        x0 = batches[0][0]
        v = torch.zeros_like(x0[:1])
        if init is not None:
            init = torch.as_tensor(init).to(x0.device, x0.dtype)
            require(init.shape == x0.shape[1:], "init", f"shape {tuple(init.shape)} does not match "
                    f"the inputs {tuple(x0.shape[1:])}")
            v = self._to_ball(init[None])
        queries = 0
        with attack_mode(model):
            refs = []
            for xb, _ in batches:
                with torch.no_grad():
                    refs.append(model(xb).argmax(1))
                queries += xb.shape[0]
            tgt = self.threat.target
            total = sum(xb.shape[0] for xb, _ in batches)
            if init is None:  # zero perturbation: the goal holds where the clean prediction has it
                best_hits = sum(int(self._goal(ref, ref).sum()) for ref in refs)
            else:
                best_hits, n_q = self._hits(model, batches, refs, v)
                queries += n_q
            best = v.clone()
            for _ in range(self.epochs):
                for (xb, _), ref in zip(batches, refs):
                    xa = (xb + v).clamp(0.0, 1.0)
                    t = torch.full_like(ref, tgt) if tgt is not None else None

                    def objective(z: torch.Tensor, ref: torch.Tensor = ref, t=t) -> torch.Tensor:
                        return ce_objective(z, ref, t)

                    g, z, _ = input_grad(model, xa, objective)
                    queries += xb.shape[0]
                    todo = ~self._goal(z.argmax(1), ref)
                    if not todo.any():
                        continue
                    step = normalize(g[todo].sum(0, keepdim=True), norm)
                    v = self._to_ball(v + self.alpha * step)
                hits, n_q = self._hits(model, batches, refs, v)
                queries += n_q
                if hits > best_hits:
                    best, best_hits = v.clone(), hits
                if best_hits >= self.stop_rate * total:
                    break
        self.perturbation = best[0].detach()
        self.fit_queries = queries
        return self.perturbation

    def attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
               clean_logits: torch.Tensor | None = None) -> AttackResult:
        """Apply the (fitted) universal perturbation to every input of the batch."""
        x, y = check_batch(x, y)
        queries = 0
        if self.perturbation is None:
            self.fit(model, (x, y))
            queries = self.fit_queries
        v = self.perturbation.to(x.device, x.dtype)
        require(v.shape == x.shape[1:], "x", f"shape {tuple(x.shape[1:])} does not match the "
                f"fitted perturbation {tuple(v.shape)}")
        with attack_mode(model), torch.inference_mode():
            clean = model(x) if clean_logits is None else clean_logits
            x_adv = project(x, x + v, self.threat.norm, self.threat.eps)
            clean_pred = clean.argmax(1)
            adv_pred = model(x_adv).argmax(1)
        queries += x.shape[0]
        target = torch.full_like(y, self.threat.target) if self.threat.targeted else None
        extra = {
            "fooled": int((adv_pred != clean_pred).sum()),
            "target_hits": int((adv_pred == target).sum()) if target is not None else 0,
            "target_clean": int((clean_pred == target).sum()) if target is not None else 0,
        }
        return summarize(x, x_adv.clone(), y, clean_pred, adv_pred, target, queries, extra)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None, logits: torch.Tensor, gen: torch.Generator) -> Run:
        raise NotImplementedError("universal perturbations override attack()")
