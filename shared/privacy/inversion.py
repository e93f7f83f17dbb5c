"""Gradient-inversion audits a site runs on itself before it sends an update.

The update a site sends (a batch gradient, or the model delta of local SGD steps) can
leak the training images themselves. These are the standard attacks, run by the site
with white-box access to its own model, so the site learns how much the update it is
about to send would reveal:

* DLG (Zhu et al., NeurIPS 2019): L-BFGS on a dummy image *and* dummy soft labels to
  match the gradient in L2.
* iDLG (Zhao et al., 2020): labels read off the last layer's gradient first, then DLG
  on the image only, which converges far more reliably.
* Inverting gradients (Geiping et al., NeurIPS 2020): cosine gradient matching plus a
  total-variation prior, Adam with signed gradients, images boxed to [0, 1].

Gradient distances are taken per layer (each layer normalised by its own size) rather
than over the whole update: early layers carry the pixels but have tiny gradients, and
the original global losses leave them unmatched. This only makes the audit stronger.
Only PSNR/SSIM sums and a count leave the audit (:func:`inversion_audit`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .quality import quality_sums

Gradients = list[torch.Tensor]
Method = Literal["dlg", "idlg", "ig"]
METHODS: tuple[str, ...] = ("dlg", "idlg", "ig")


class Reconstruction(NamedTuple):
    images: torch.Tensor  # (B, C, H, W) in [0, 1]
    labels: torch.Tensor  # (B,) the labels the attack used (inferred or optimised)
    loss: float  # final gradient-matching loss


def batch_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Gradients:
    """Gradient of the mean cross-entropy of one batch: what FedSGD would send."""
    params = [p for p in model.parameters() if p.requires_grad]
    loss = F.cross_entropy(model(images), labels)
    return [g.detach() for g in torch.autograd.grad(loss, params)]


def gradients_from_update(
    model: nn.Module, before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor], lr: float
) -> Gradients:
    """The gradient an attacker reads off a one-step SGD model delta: (w_before - w_after) / lr."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    return [(before[n].float() - after[n].float()) / lr for n in names]


def _last_layer(gradients: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The classifier's weight gradient (last 2D tensor) and its bias gradient, if any."""
    idx = max(i for i, g in enumerate(gradients) if g.dim() == 2)
    bias = gradients[idx + 1] if idx + 1 < len(gradients) and gradients[idx + 1].dim() == 1 else None
    return gradients[idx], bias


def infer_labels(
    model: nn.Module, gradients: Sequence[torch.Tensor], batch_size: int, input_shape: Sequence[int]
) -> torch.Tensor:
    """Labels from the last layer's gradient (iDLG for one image, LLG-style counts for a batch).

    For softmax cross-entropy the bias gradient of class c is mean_i(p_ic) - n_c / B; only
    the true class of a single image has a negative entry. For a batch, the mean
    prediction is estimated on random inputs and the counts rounded to sum to B.
    """
    weight, bias = _last_layer(gradients)
    g = bias if bias is not None else weight.sum(dim=1)
    if batch_size == 1:
        return g.argmin().reshape(1)
    if bias is None:  # no bias: most negative rows first, cycling
        return torch.argsort(g)[torch.arange(batch_size, device=g.device) % len(g)].sort().values
    with torch.no_grad():
        mean_p = F.softmax(model(torch.rand(64, *input_shape[1:]).to(g.device)), dim=1).mean(0)
    counts = (batch_size * (mean_p - g)).clamp(min=0)
    whole = counts.floor().long()
    for c in torch.argsort(counts - whole, descending=True)[: max(0, batch_size - int(whole.sum()))]:
        whole[c] += 1
    while whole.sum() > batch_size:
        whole[whole.argmax()] -= 1
    return torch.repeat_interleave(torch.arange(len(whole), device=whole.device), whole)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels: the image prior of Geiping et al."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def _dummy_gradients(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> Gradients:
    params = [p for p in model.parameters() if p.requires_grad]
    logits = model(x)
    if target.dtype.is_floating_point:  # DLG's soft labels
        loss = torch.sum(-F.softmax(target, dim=-1) * F.log_softmax(logits, dim=-1)) / len(x)
    else:
        loss = F.cross_entropy(logits, target)
    return list(torch.autograd.grad(loss, params, create_graph=True))


def _l2_distance(dummy: Gradients, target: Gradients, masks: Gradients) -> torch.Tensor:
    """Squared L2 distance, each layer divided by its target's squared norm.

    Early layers hold the pixel information but have tiny gradients (sigmoid/ReLU
    derivatives shrink them); unweighted, the loss ignores them and the image stays wrong.
    """
    total = torch.zeros((), device=target[0].device)
    for d, t, m in zip(dummy, target, masks, strict=True):
        norm = (t * m).pow(2).sum()
        if norm > 0:
            total = total + ((d - t) * m).pow(2).sum() / norm
    return total / len(target)


def _cosine_distance(dummy: Gradients, target: Gradients, masks: Gradients) -> torch.Tensor:
    """Mean over layers of 1 - cosine similarity (per layer, for the reason given in _l2_distance)."""
    total = torch.zeros((), device=target[0].device)
    for d, t, m in zip(dummy, target, masks, strict=True):
        total = total + 1 - F.cosine_similarity((d * m).flatten(), (t * m).flatten(), dim=0, eps=1e-12)
    return total / len(target)


def reconstruct(
    model: nn.Module,
    gradients: Sequence[torch.Tensor],
    input_shape: Sequence[int],
    *,
    method: Method = "idlg",
    labels: torch.Tensor | None = None,
    iterations: int = 300,
    lr: float | None = None,
    tv_weight: float = 1e-4,
    signed: bool = True,
    seed: int = 0,
    ignore_zeros: bool = True,
) -> Reconstruction:
    """Recover the batch ``input_shape`` (B, C, H, W) whose gradient is ``gradients``.

    ``labels`` (if the attacker knows them) skip label inference. ``ignore_zeros``
    matches only the transmitted entries of a sparsified (pruned) update, which is the
    stronger attacker and so the conservative audit.
    """
    if method not in METHODS:
        raise ValueError(f"method: unknown inversion attack {method!r}; choose one of {METHODS}")
    was_training = model.training
    model.eval()
    target = [g.detach().float() for g in gradients]
    masks = [(t != 0).float() if ignore_zeros else torch.ones_like(t) for t in target]
    gen = torch.Generator().manual_seed(seed)
    device = target[0].device  # drawn on the CPU generator, then moved: the same start on any device
    x = torch.rand(tuple(input_shape), generator=gen).to(device).requires_grad_(True)
    batch = int(input_shape[0])
    if method == "dlg":
        num_classes = _last_layer(target)[0].shape[0]
        y: torch.Tensor = torch.randn(batch, num_classes, generator=gen).to(device).requires_grad_(True)
        variables = [x, y]
    else:
        y = labels if labels is not None else infer_labels(model, target, batch, input_shape)
        variables = [x]
    try:
        if method == "ig":
            loss = _adam_cosine(model, x, y, target, masks, iterations, lr or 0.1, tv_weight, signed)
        else:
            loss = _lbfgs_l2(model, variables, x, y, target, masks, iterations, lr or 1.0)
    finally:
        model.train(was_training)
    final_labels = y.detach().argmax(-1) if y.dtype.is_floating_point else y
    return Reconstruction(x.detach().clamp(0, 1), final_labels, loss)


def _lbfgs_l2(model, variables, x, y, target, masks, iterations: int, lr: float) -> float:
    opt = torch.optim.LBFGS(
        variables, lr=lr, max_iter=iterations, history_size=100,
        tolerance_grad=1e-12, tolerance_change=1e-14, line_search_fn="strong_wolfe",
    )
    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = _l2_distance(_dummy_gradients(model, x, y), target, masks)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        x.clamp_(0, 1)
    return float(closure().detach())


def _adam_cosine(model, x, y, target, masks, iterations: int, lr: float, tv_weight: float, signed: bool) -> float:
    opt = torch.optim.Adam([x], lr=lr)
    milestones = [int(iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
    loss = torch.tensor(0.0)
    for _ in range(iterations):
        opt.zero_grad()
        loss = _cosine_distance(_dummy_gradients(model, x, y), target, masks) + tv_weight * total_variation(x)
        loss.backward()
        if signed:
            x.grad.sign_()  # type: ignore[union-attr]
        opt.step()
        sched.step()
        with torch.no_grad():
            x.clamp_(0, 1)
    return float(loss.detach())


def inversion_audit(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    gradients: Sequence[torch.Tensor] | None = None,
    defence: Callable[[Gradients], Gradients] | None = None,
    method: Method = "idlg",
    prefix: str = "inversion",
    **attack: object,
) -> dict[str, float | int]:
    """Attack the update this batch produces (or ``gradients``, the update really sent).

    ``defence`` transforms the clean batch gradient the way the site would before sending
    (pruning, clipping, noise). Returns only ``{prefix}.psnr-sum``, ``{prefix}.ssim-sum``
    and ``{prefix}.images-count``.
    """
    if gradients is None:
        gradients = batch_gradients(model, images, labels)
        if defence is not None:
            gradients = defence(list(gradients))
    recon = reconstruct(model, gradients, tuple(images.shape), method=method, **attack)  # type: ignore[arg-type]
    return quality_sums(recon.images, images, prefix=prefix)
