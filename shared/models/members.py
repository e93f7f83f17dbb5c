"""A defence comparison's global model: one classifier per hardening method, trained side by side.

With ``defence-models = "none,pgd-at,trades"`` the federation's model is a
:class:`MemberSet`; its ``state_dict`` keys are ``members.<method>.<parameter>``,
so FedAvg (and every other strategy) aggregates each member on its own, exactly
as it would a single model, and one checkpoint holds the whole comparison.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


class MemberSet(nn.Module):
    """Classifiers keyed by method (``none`` = plain training); it predicts as its first member.

    Code that sees it as one classifier (the plain evaluation, the attack suite,
    ``fedaegis evaluate``) therefore scores the first member, the standard model
    when ``none`` is listed first.
    """

    def __init__(self, names: Sequence[str], build: Callable[[], nn.Module]) -> None:
        super().__init__()
        if not names:
            raise ValueError("names: a member set needs at least one member")
        self.members = nn.ModuleDict({name: build() for name in names})

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.members.keys())

    @property
    def reference(self) -> nn.Module:
        return self.members[self.names[0]]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.reference.features(x)  # type: ignore[operator]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reference(x)
