"""How a loss becomes a parameter update: a plain optimiser step (with optional mixed
precision) or Opacus' DP-SGD, which also decides which samples each batch holds.

DP-SGD bounds what any single image can contribute to an update (per-sample clipping)
and hides it in Gaussian noise, with a guarantee (epsilon, delta) from Opacus'
accountant; Opacus' PrivacyEngine does all of it, nothing here is new cryptography
or accounting.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

# A simulation needs no cryptographic RNG; RDP at a single large step is merely conservative;
# the first layer's hook fires without input gradients by design.
_BENIGN_OPACUS_WARNINGS = ("Secure RNG turned off", "Optimal order is the largest alpha", "Full backward hook is firing")

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


class OptimizerStep:
    """zero_grad, backward, step; with ``amp='fp16'`` through a GradScaler (fp16 gradients underflow)."""

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device, amp: str = "none") -> None:
        self.optimizer = optimizer
        self.scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None

    def __call__(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()


def shuffled(images: torch.Tensor, targets: torch.Tensor, batch_size: int, gen: torch.Generator) -> Batches:
    """One epoch of batches in a seeded random order (drawn from ``gen`` when iteration starts)."""
    for idx in torch.randperm(len(targets), generator=gen).split(batch_size):
        yield images[idx], targets[idx]


@dataclass
class DPSGD:
    """DP-SGD calibrated to (``target_epsilon``, ``target_delta``) over the whole fit.

    Opacus picks the noise multiplier for the fit's epochs at sampling rate
    batch_size / N (Poisson sampling), clips each sample's gradient to ``max_grad_norm``
    and reports the epsilon actually spent (``epsilon`` after the fit). The model must
    have no BatchNorm (use ``norm='group'``).
    """

    target_epsilon: float
    target_delta: float = 1e-5
    max_grad_norm: float = 1.0
    noise_seed: int = 1
    epsilon: float = field(default=float("nan"), init=False)
    noise_multiplier: float = field(default=float("nan"), init=False)

    @contextlib.contextmanager
    def attach(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, targets: torch.Tensor,
        batch_size: int, epochs: int, gen: torch.Generator, device: torch.device = torch.device("cpu"),
    ) -> Iterator[tuple[nn.Module, torch.optim.Optimizer, DataLoader]]:
        """(private model, DP optimiser, Poisson loader) for the block; Opacus' hooks are gone after it."""
        from opacus import PrivacyEngine
        from opacus.validators import ModuleValidator

        errors = ModuleValidator.validate(model, strict=False)
        if errors:
            raise ValueError(f"model is not DP-SGD compatible (use norm='group'): {errors[0]}")
        for module in model.modules():  # in-place ReLU after a hooked layer breaks Opacus' backward hooks
            if getattr(module, "inplace", False):
                module.inplace = False  # type: ignore[assignment]
        loader = DataLoader(TensorDataset(images, targets), batch_size=min(batch_size, len(targets)), generator=gen)
        with warnings.catch_warnings():
            for benign in _BENIGN_OPACUS_WARNINGS:
                warnings.filterwarnings("ignore", message=benign)
            engine = PrivacyEngine(accountant="rdp", secure_mode=False)
            private, opt, loader = engine.make_private_with_epsilon(
                module=model, optimizer=optimizer, data_loader=loader, target_epsilon=self.target_epsilon,
                target_delta=self.target_delta, epochs=epochs, max_grad_norm=self.max_grad_norm,
                noise_generator=torch.Generator(device=device).manual_seed(self.noise_seed),
            )
            try:
                yield private, opt, loader
            finally:
                private.to_standard_module()  # type: ignore[operator]  # drop Opacus' hooks; the model keeps its weights
            self.epsilon = float(engine.get_epsilon(self.target_delta))
            self.noise_multiplier = float(opt.noise_multiplier)
