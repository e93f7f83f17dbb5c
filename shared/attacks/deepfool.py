"""DeepFool (Moosavi-Dezfooli et al., 2016): step to the nearest linearised class boundary.

Multi-class: at each iteration every candidate class ``k`` gives a boundary
``f_k - f_y = 0``; the closest one (in the dual norm) is crossed. The total step
is scaled by ``1 + overshoot`` so the final point lies beyond the boundary.
Batched over samples; the Jacobian is built with one backward pass per
candidate class (not per sample).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Attack, Run, ThreatModel, non_negative, positive_int
from .ops import view_b


class DeepFool(Attack):
    """Untargeted DeepFool (L2 or Linf) over the ``candidates`` most likely other classes."""

    name = "deepfool"
    default_threat = ThreatModel(norm="l2", eps=0.5)
    supports_targeted = False
    needs_finite_eps = False

    def __init__(self, threat: ThreatModel | None = None, *, steps: int = 50,
                 overshoot: float = 0.02, candidates: int = 10, seed: int = 0) -> None:
        super().__init__(threat, seed=seed)
        self.steps = positive_int("steps", steps)
        self.overshoot = non_negative("overshoot", overshoot)
        self.candidates = positive_int("candidates", candidates)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None, logits: torch.Tensor, gen: torch.Generator) -> Run:
        n = x.shape[0]
        k = min(self.candidates, logits.shape[1] - 1)
        cand = logits.scatter(1, y[:, None], float("-inf")).topk(k, dim=1).indices  # (n, k)
        linf = self.threat.norm == "linf"
        r_tot = torch.zeros_like(x)
        out = x.clone()
        pred_out = y.clone()
        idx = torch.arange(n, device=x.device)
        xc, yc, cc, rc = x, y, cand, r_tot
        xa = x.clone()
        queries = 0
        for it in range(self.steps + 1):
            xg = xa.detach().requires_grad_(True)
            z = model(xg)
            queries += idx.numel()
            pred = z.detach().argmax(1)
            done = pred != yc if it < self.steps else torch.ones_like(yc, dtype=torch.bool)
            keep = None
            if done.any():
                out[idx[done]] = xa[done]
                pred_out[idx[done]] = pred[done]
                keep = ~done
                if not keep.any():
                    break
                # the graph still covers the finished rows; their gradients are dropped below
                idx, xc, yc, cc, rc, xa, z = idx[keep], xc[keep], yc[keep], cc[keep], rc[keep], xa[keep], z[keep]
            z_y = z.gather(1, yc[:, None])
            diffs = z.gather(1, cc) - z_y  # (m, k): f_k - f_y, negative while correct
            grads = []
            for j in range(k):
                (gj,) = torch.autograd.grad(diffs[:, j].sum(), xg, retain_graph=j < k - 1)
                grads.append(gj if keep is None else gj[keep])
            w = torch.stack(grads, 1)  # (m, k, ...)
            f = diffs.detach().abs()
            wf = w.flatten(2)
            wn = wf.abs().sum(2) if linf else wf.norm(dim=2)
            dist = f / wn.clamp(min=1e-12)
            best = dist.argmin(1)
            sel = torch.arange(idx.numel(), device=x.device)
            w_l = w[sel, best]
            d_l = dist[sel, best]
            if linf:
                r = view_b(d_l + 1e-4, w_l) * w_l.sign()
            else:
                r = view_b((d_l + 1e-4) / wn[sel, best].clamp(min=1e-12), w_l) * w_l
            rc = rc + r
            xa = (xc + (1 + self.overshoot) * rc).clamp(0.0, 1.0)
        return Run(out, pred_out, queries)
