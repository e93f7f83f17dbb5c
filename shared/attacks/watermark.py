"""Visible watermark attack (after Apostolidis & Papakostas, 2021).

Hospitals stamp text or logos on images; a blended watermark placed at the
wrong spot can flip a diagnosis. The attack alpha-blends a text mask of colour
``c`` into the image, ``x' = x + alpha * mask * (c - x)``, so every pixel moves
by at most ``alpha`` (<= the Linf ``eps`` of the threat model), and searches
positions, scales and colours for the placement that fools the model. For 3D
volumes the stamp goes through every slice. Black-box: only predictions are used.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Attack, Run, ThreatModel, non_negative, positive_int, require
from .losses import goal_reached, margin

# 3x5 bitmap font: each glyph is five rows of three bits.
FONT = {
    "A": "010101111101101", "B": "110101110101110", "C": "011100100100011",
    "D": "110101101101110", "E": "111100110100111", "F": "111100110100100",
    "G": "011100101101011", "H": "101101111101101", "I": "111010010010111",
    "J": "001001001101010", "K": "101101110101101", "L": "100100100100111",
    "M": "101111111101101", "N": "110101101101101", "O": "010101101101010",
    "P": "110101110100100", "Q": "010101101110011", "R": "110101110101101",
    "S": "011100010001110", "T": "111010010010010", "U": "101101101101111",
    "V": "101101101101010", "W": "101101111111101", "X": "101101010101101",
    "Y": "101101010010010", "Z": "111001010100111", "0": "111101101101111",
    "1": "010110010010111", "2": "110001010100111", "3": "110001010001110",
    "4": "101101111001001", "5": "111100110001110", "6": "011100111101111",
    "7": "111001010010010", "8": "111101111101111", "9": "111101111001110",
    " ": "000000000000000", "-": "000000111000000", "+": "000010111010000",
}


def text_mask(text: str, scale: int = 1) -> torch.Tensor:
    """Boolean (5*scale, (4*len-1)*scale) mask of ``text`` in the built-in 3x5 font."""
    rows = []
    for r in range(5):
        row: list[int] = []
        for i, ch in enumerate(text.upper()):
            bits = FONT[ch][3 * r:3 * r + 3]
            row += [int(b) for b in bits] + ([0] if i < len(text) - 1 else [])
        rows.append(row)
    m = torch.tensor(rows, dtype=torch.bool)
    return m.repeat_interleave(scale, 0).repeat_interleave(scale, 1)


class Watermark(Attack):
    """Search over placements of a blended text watermark; ``alpha`` defaults to ``eps``."""

    name = "watermark"
    default_threat = ThreatModel(norm="linf", eps=0.3)
    norms = ("linf",)

    def __init__(self, threat: ThreatModel | None = None, *, text: str = "MED",
                 alpha: float | None = None, scales: tuple[int, ...] = (2, 1), stride: int = 2,
                 colors: tuple[float, ...] = (1.0, 0.0), chunk: int = 32, seed: int = 0) -> None:
        super().__init__(threat, seed=seed)
        require(isinstance(text, str) and len(text) > 0 and all(ch.upper() in FONT for ch in text),
                "text", f"must be non-empty and use {''.join(sorted(FONT))!r}, got {text!r}")
        self.text = text
        self.alpha = self.threat.eps if alpha is None else non_negative("alpha", alpha)
        require(self.alpha <= self.threat.eps, "alpha",
                f"opacity {self.alpha} exceeds the declared budget eps={self.threat.eps}")
        self.scales = tuple(positive_int("scales", s) for s in scales)
        require(len(self.scales) > 0, "scales", "need at least one scale")
        self.stride = positive_int("stride", stride)
        self.colors = tuple(non_negative("colors", c) for c in colors)
        require(len(self.colors) > 0 and all(c <= 1 for c in self.colors), "colors",
                f"need values in [0, 1], got {colors!r}")
        self.chunk = positive_int("chunk", chunk)

    def candidates(self, spatial: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """All placements: masks (K, 1, *spatial) and colours (K,); larger stamps first."""
        h, w = spatial[-2:]
        masks, cols = [], []
        for s in self.scales:
            m = text_mask(self.text, s)
            mh, mw = m.shape
            if mh > h or mw > w:
                continue
            for top in range(0, h - mh + 1, self.stride):
                for left in range(0, w - mw + 1, self.stride):
                    full = torch.zeros((h, w), dtype=torch.bool)
                    full[top:top + mh, left:left + mw] = m
                    for c in self.colors:
                        masks.append(full)
                        cols.append(c)
        require(len(masks) > 0, "text", f"{self.text!r} does not fit in a {h}x{w} image")
        stack = torch.stack(masks).to(device)
        stack = stack.view(-1, 1, *([1] * (len(spatial) - 2)), h, w).expand(-1, 1, *spatial)
        return stack, torch.tensor(cols, device=device)

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             target: torch.Tensor | None, logits: torch.Tensor, gen: torch.Generator) -> Run:
        masks, cols = self.candidates(tuple(x.shape[2:]), x.device)
        masks = masks.to(x.dtype)
        n = x.shape[0]
        best_m = torch.full((n,), float("inf"), device=x.device, dtype=x.dtype)
        best_k = torch.zeros(n, dtype=torch.long, device=x.device)
        pred_out = y.clone()
        alive = torch.ones(n, dtype=torch.bool, device=x.device)
        queries = 0
        for start in range(0, masks.shape[0], self.chunk):
            idx = alive.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            mk, ck = masks[start:start + self.chunk], cols[start:start + self.chunk]
            kc = mk.shape[0]
            xs = x[idx][:, None]  # (a, 1, C, ...)
            colour = ck.view(1, kc, *([1] * (x.dim() - 1)))
            imgs = (xs + self.alpha * mk[None] * (colour - xs)).flatten(0, 1)
            with torch.no_grad():
                z = model(imgs)
            queries += imgs.shape[0]
            yy = y[idx].repeat_interleave(kc)
            tt = target[idx].repeat_interleave(kc) if target is not None else None
            m = (margin(z, yy) if tt is None else -margin(z, tt)).view(-1, kc)
            pr = z.argmax(1).view(-1, kc)
            # prefer any placement that reaches the goal, then the lowest margin
            won = goal_reached(pr, yy.view(-1, kc), None if tt is None else tt.view(-1, kc))
            score = torch.where(won, m - 1e9, m)
            s_min, k_min = score.min(1)
            better = s_min < best_m[idx]
            j = idx[better]
            best_m[j] = s_min[better]
            best_k[j] = k_min[better] + start
            ar = torch.arange(idx.numel(), device=x.device)
            pred_out[j] = pr[ar, k_min][better]
            alive[idx[won.any(1)]] = False
        mk, ck = masks[best_k], cols[best_k].view(-1, *([1] * (x.dim() - 1)))
        x_adv = x + self.alpha * mk * (ck - x)
        return Run(x_adv.clamp(0.0, 1.0), None, queries)
