"""AutoAttack-style ensemble (Croce & Hein, 2020): APGD-CE, APGD-T, FAB-T, Square in sequence.

Each stage attacks only the samples that are still correctly classified, so the
expensive later stages run on few samples; a sample counts as robust only if it
survives every stage (worst case per sample). Per-stage survivor counts are
reported in ``AttackResult.extra``.

With ``early_stop=False`` every stage attacks every sample and spends its full
budget on it (APGD and FAB keep going after a success, as in their reference
code; Square keeps lowering the margin of a fooled sample): the cost that early
stopping, across stages and within each attack, saves.

Two presets, so a run chooses its cost by name: ``autoattack`` is the standard
protocol at the reference budgets (APGD-CE and APGD-T 100 steps, 9 target classes
for APGD-T and FAB-T, Square 5000 queries); ``autoattack-fast`` keeps the four stages
and early stopping but spends a fraction of the queries (50 steps, 3 target
classes, Square 1000 queries), for screening runs and every-round monitoring.
The README tabulates their queries per sample by class count.
"""

from __future__ import annotations

import torch
from torch import nn

from .apgd import APGD, APGDT
from .base import Attack, Run, ThreatModel, positive_int, require
from .fab import FAB
from .square import Square

STAGES = ("apgd-ce", "apgd-t", "fab-t", "square")


class AutoAttack(Attack):
    """The standard AutoAttack protocol with configurable budgets (defaults as published)."""

    name = "autoattack"
    supports_targeted = False

    def __init__(self, threat: ThreatModel | None = None, *, stages: tuple[str, ...] = STAGES,
                 apgd_steps: int = 100, n_target_classes: int = 9, fab_steps: int = 100,
                 square_queries: int = 5000, restarts: int = 1, seed: int = 0,
                 early_stop: bool = True) -> None:
        super().__init__(threat, seed=seed, early_stop=early_stop)
        stages = tuple(stages)
        require(len(stages) > 0 and all(s in STAGES for s in stages), "stages",
                f"must be a non-empty subset of {STAGES}, got {stages!r}")
        self.stages = stages
        self.apgd_steps = positive_int("apgd_steps", apgd_steps)
        self.n_target_classes = positive_int("n_target_classes", n_target_classes)
        self.fab_steps = positive_int("fab_steps", fab_steps)
        self.square_queries = positive_int("square_queries", square_queries)
        self.restarts = positive_int("restarts", restarts)

    def components(self) -> list[tuple[str, Attack]]:
        """The stage attacks, sharing this ensemble's threat model and seed."""
        t, s = self.threat, self.seed
        build = {
            "apgd-ce": lambda: APGD(t, steps=self.apgd_steps, restarts=self.restarts, loss="ce",
                                    seed=s, early_stop=self.early_stop),
            "apgd-t": lambda: APGDT(t, steps=self.apgd_steps, restarts=self.restarts,
                                    n_target_classes=self.n_target_classes, seed=s,
                                    early_stop=self.early_stop),
            "fab-t": lambda: FAB(t, steps=self.fab_steps, restarts=self.restarts,
                                 n_target_classes=self.n_target_classes, seed=s,
                                 early_stop=self.early_stop),
            "square": lambda: Square(t, n_queries=self.square_queries, seed=s,
                                     early_stop=self.early_stop),
        }
        return [(name, build[name]()) for name in self.stages]

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None, logits: torch.Tensor, gen: torch.Generator) -> Run:
        x_adv, pred = x.clone(), y.clone()
        robust = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        queries = 0
        extra: dict[str, int] = {}
        for name, attack in self.components():
            # early_stop: only survivors are attacked; otherwise every stage sees every sample
            sub = robust.nonzero().squeeze(1) if self.early_stop else torch.arange(x.shape[0], device=x.device)
            if sub.numel():
                d = attack.details(model, x[sub], y[sub], clean_logits=logits[sub])
                queries += d.queries
                fooled = d.adv_pred != y[sub]
                new = fooled & robust[sub]
                j = sub[new]
                x_adv[j], pred[j] = d.x_adv[new], d.adv_pred[new]
                robust[sub[fooled]] = False
            extra[f"robust_after_{name}"] = int(robust.sum())
        return Run(x_adv, pred, queries, extra)


class AutoAttackFast(AutoAttack):
    """AutoAttack at screening budgets: the same stages and early stopping, about a fifth of the queries."""

    name = "autoattack-fast"

    def __init__(self, threat: ThreatModel | None = None, *, stages: tuple[str, ...] = STAGES,
                 apgd_steps: int = 50, n_target_classes: int = 3, fab_steps: int = 50,
                 square_queries: int = 1000, restarts: int = 1, seed: int = 0,
                 early_stop: bool = True) -> None:
        super().__init__(threat, stages=stages, apgd_steps=apgd_steps, n_target_classes=n_target_classes,
                         fab_steps=fab_steps, square_queries=square_queries, restarts=restarts, seed=seed,
                         early_stop=early_stop)
