"""Defended systems as single classifiers: detector-gated routing and logit ensembles.

Each system is one ``nn.Module`` mapping images to logits, so every evaluation
attack runs *through* the whole defence: attacking the system is the adaptive
(white-box) attack, as robustness claims require, while crafting on one of its
members and transferring measures the attacker who does not know the defence.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..detection.base import batched, threshold_at_fpr

GATES = ("straight-through", "soft", "hard")


class DetectorGatedRouter(nn.Module):
    """Inputs the detector deems clean go to ``standard``, suspected adversarial ones to ``hardened``.

    The standard model keeps its clean accuracy on the (most) inputs that are
    clean; the hardened model, more robust but less accurate, sees only what looks
    attacked. The routing decision ``score > threshold`` has no gradient, so the
    attacker's gradient goes through a sigmoid gate ``sigmoid((score - threshold) /
    temperature)`` instead: ``gate='straight-through'`` (default) outputs exactly
    the hard routing and back-propagates the soft gate (BPDA), ``'soft'`` also
    outputs the soft mixture, ``'hard'`` gives no gradient through the decision.
    """

    def __init__(self, detector: nn.Module, standard: nn.Module, hardened: nn.Module, *,
                 threshold: float, temperature: float = 1.0, gate: str = "straight-through") -> None:
        super().__init__()
        if gate not in GATES:
            raise ValueError(f"gate: must be one of {GATES}, got {gate!r}")
        if not temperature > 0:
            raise ValueError(f"temperature: must be > 0, got {temperature!r}")
        self.detector, self.standard, self.hardened = detector, standard, hardened
        self.threshold, self.temperature, self.gate = float(threshold), float(temperature), gate

    @classmethod
    def calibrated(cls, detector: nn.Module, standard: nn.Module, hardened: nn.Module,
                   x_clean: torch.Tensor, *, fpr: float = 0.05, gate: str = "straight-through",
                   batch_size: int = 256) -> DetectorGatedRouter:
        """A router that sends at most a fraction ``fpr`` of new clean inputs to ``hardened`` (in expectation).

        The threshold is the split-conformal cut of ``x_clean``'s scores (:func:`threshold_at_fpr`).

        The temperature is a tenth of the clean scores' interquartile range, so the
        surrogate gate is steep but still has a usable gradient near the threshold.
        """
        scores = batched(detector, detector, x_clean, batch_size).double()
        threshold = threshold_at_fpr(scores, fpr)
        q1, q3 = torch.quantile(scores, torch.tensor([0.25, 0.75], dtype=torch.float64)).tolist()
        temperature = max((q3 - q1) / 10, 1e-6)
        return cls(detector, standard, hardened, threshold=threshold, temperature=temperature, gate=gate)

    def route(self, x: torch.Tensor) -> torch.Tensor:
        """True where an input goes to the hardened model."""
        return self.detector(x) > self.threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = self.detector(x)
        soft = torch.sigmoid((score - self.threshold) / self.temperature)
        hard = (score > self.threshold).to(soft.dtype)
        g = {"straight-through": hard + (soft - soft.detach()), "soft": soft, "hard": hard}[self.gate]
        g = g[:, None]
        return (1 - g) * self.standard(x) + g * self.hardened(x)


class LogitEnsemble(nn.Module):
    """Weighted mean of the logits of independently trained models (uniform by default)."""

    def __init__(self, models: Sequence[nn.Module], weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if len(models) == 0:
            raise ValueError("models: an ensemble needs at least one model")
        w = torch.ones(len(models)) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        if w.shape != (len(models),) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights: need {len(models)} non-negative weights with a positive sum")
        self.members = nn.ModuleList(models)
        self.register_buffer("weights", w / w.sum())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.stack([m(x) for m in self.members])
        return torch.einsum("m,mnc->nc", self.weights.to(logits.dtype), logits)
