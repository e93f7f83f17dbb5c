"""Detector ROC AUC from binned score histograms, so sites never release per-sample scores.

Each site scores its clean and adversarial test inputs, counts them into fixed
bins shared by every site (from the run configuration: never fitted on any
site's data) and sends one count per bin:

    detector.<name>.eps=<eps>.num-examples            clean + adversarial inputs scored
    detector.<name>.eps=<eps>.clean-bin<i>-count      clean inputs with score in bin i
    detector.<name>.eps=<eps>.adv-bin<i>-count        adversarial inputs with score in bin i

One group per (detector, eps) with its own ``num-examples``, so cell suppression
treats a histogram as one cell and zeroes it whole. The server sums the counts
over sites and computes the AUC of the pooled histograms, which equals the AUC of
the pooled samples up to ties within a bin (counted as one half).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..attacks import build_attack
from ..attacks.base import attack_mode, check_batch
from ..data import ImageSet
from ..results.eps import eps_name

PREFIX = "detector"
SCALES = ("linear", "log", "asinh")
_NAME = re.compile(rf"^{PREFIX}\.(?P<det>[a-z0-9_\-+]+)\.eps=(?P<eps>[0-9.e+\-]+)\."
                   r"(?P<kind>clean|adv)-bin(?P<bin>[0-9]+)-count$")
_DETECTOR = re.compile(r"^[a-z0-9][a-z0-9_\-+]*$")


def _transform(v: torch.Tensor | float, scale: str) -> torch.Tensor:
    v = torch.as_tensor(v, dtype=torch.float64)
    if scale == "log":
        return v.clamp_min(1e-300).log()
    return v.asinh() if scale == "asinh" else v


@dataclass(frozen=True)
class ScoreBins:
    """``bins`` equal-width bins of ``scale(score)`` between ``scale(lo)`` and ``scale(hi)``.

    Scores outside [lo, hi] fall into the first or last bin, so no input is lost,
    only resolution. ``log`` suits positive scores spanning decades (distances),
    ``asinh`` signed heavy-tailed ones (logits), ``linear`` bounded ones.
    """

    lo: float
    hi: float
    bins: int = 200
    scale: str = "log"

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"scale: must be one of {SCALES}, got {self.scale!r}")
        if not (isinstance(self.bins, int) and 2 <= self.bins <= 9999):
            raise ValueError(f"bins: must be an integer in [2, 9999], got {self.bins!r}")
        if not (math.isfinite(self.lo) and math.isfinite(self.hi) and self.lo < self.hi):
            raise ValueError(f"lo, hi: need finite lo < hi, got {self.lo!r}, {self.hi!r}")
        if self.scale == "log" and self.lo <= 0:
            raise ValueError(f"lo: a log scale needs lo > 0, got {self.lo!r}")

    def index(self, scores: torch.Tensor) -> torch.Tensor:
        """The bin of each score; NaN and +inf go to the last bin (most suspicious)."""
        t = _transform(scores.detach().cpu().nan_to_num(nan=math.inf), self.scale)
        lo, hi = _transform(self.lo, self.scale), _transform(self.hi, self.scale)
        pos = ((t - lo) / (hi - lo) * self.bins).clamp(0, self.bins - 1)
        return pos.floor().long()

    def histogram(self, scores: torch.Tensor) -> torch.Tensor:
        return torch.bincount(self.index(scores.reshape(-1)), minlength=self.bins)


# Defaults for the run configuration: Mahalanobis distances are positive and span decades,
# KD+BU scores are logistic-regression logits. 200 bins kept binned AUC within 0.01 of
# the exact AUC on BloodMNIST (tests/test_detection_blood.py).
DEFAULT_BINS: dict[str, ScoreBins] = {
    "mahalanobis": ScoreBins(1.0, 1e3, bins=200, scale="log"),
    "kd-bu": ScoreBins(-1e3, 1e3, bins=200, scale="asinh"),
}


def binned_auc(clean: Sequence[float] | torch.Tensor, adv: Sequence[float] | torch.Tensor) -> float:
    """P(adversarial score > clean score) from two histograms over the same bins; ties count 1/2."""
    c, a = torch.as_tensor(clean, dtype=torch.float64), torch.as_tensor(adv, dtype=torch.float64)
    if c.shape != a.shape:
        raise ValueError(f"histograms differ in length: {len(c)} and {len(a)}")
    if c.sum() <= 0 or a.sum() <= 0:
        return math.nan
    below = torch.cumsum(c, 0) - c
    return float((a * (below + 0.5 * c)).sum() / (a.sum() * c.sum()))


def _group(detector: str, eps: float) -> str:
    return f"{PREFIX}.{detector}.eps={eps_name(eps)}"


def encode_histograms(detector: str, eps: float, clean: torch.Tensor, adv: torch.Tensor) -> dict[str, int]:
    """Wire metrics of one (detector, eps) histogram pair (see the module docstring)."""
    if not _DETECTOR.match(detector):
        raise ValueError(f"detector: name {detector!r} must be lower-case letters, digits, _ - +")
    width = len(str(len(clean) - 1))
    g = _group(detector, eps)
    out = {f"{g}.num-examples": int(clean.sum() + adv.sum())}
    for kind, hist in (("clean", clean), ("adv", adv)):
        out.update({f"{g}.{kind}-bin{i:0{width}d}-count": int(v) for i, v in enumerate(hist.tolist())})
    return out


def decode_histograms(metrics: Mapping[str, float]) -> dict[tuple[str, float], tuple[torch.Tensor, torch.Tensor]]:
    """Wire metrics (one site's or summed over sites) -> {(detector, eps): (clean, adv) histograms}."""
    cells: dict[tuple[str, float], dict[str, dict[int, float]]] = {}
    for name, value in metrics.items():
        m = _NAME.match(name)
        if m:
            cell = cells.setdefault((m["det"], float(m["eps"])), {"clean": {}, "adv": {}})
            cell[m["kind"]][int(m["bin"])] = float(value)
    out = {}
    for key, cell in cells.items():
        n = 1 + max([*cell["clean"], *cell["adv"]])
        hist = {k: torch.tensor([cell[k].get(i, 0.0) for i in range(n)], dtype=torch.float64)
                for k in ("clean", "adv")}
        out[key] = (hist["clean"], hist["adv"])
    return out


def auc_table(metrics: Mapping[str, float]) -> dict[tuple[str, float], float]:
    """Binned ROC AUC per (detector, eps) from wire metrics (e.g. summed over sites)."""
    return {key: binned_auc(c, a) for key, (c, a) in decode_histograms(metrics).items()}


def _scores(detector: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    with attack_mode(detector), torch.no_grad():
        return torch.cat([detector(xb) for xb in x.split(batch_size)]).float()


def detection_scores(
    detector: nn.Module,
    model: nn.Module,
    data: ImageSet | tuple[torch.Tensor, torch.Tensor],
    epsilons: Sequence[float],
    *,
    steps: int = 10,
    successful_only: bool = True,
    batch_size: int = 128,
    seed: int = 0,
) -> dict[float, tuple[torch.Tensor, torch.Tensor]]:
    """Per eps, (clean scores, adversarial scores) of PGD-``steps`` on ``model``; stays at the site.

    With ``successful_only`` (Lee et al.'s protocol) the clean set is the correctly
    classified inputs and the adversarial set their successful adversarial examples;
    without it, all inputs (the attack leaves already misclassified ones unchanged).
    """
    x, y = (data.images, data.labels) if isinstance(data, ImageSet) else data
    x, y = check_batch(x, y)
    with attack_mode(model), torch.no_grad():
        ok = torch.cat([model(xb).argmax(1) for xb in x.split(batch_size)]) == y
    clean_scores = _scores(detector, x, batch_size)
    out = {}
    for eps in epsilons:
        atk = build_attack("pgd", eps=float(eps), steps=steps, seed=seed, early_stop=False)
        x_adv = torch.cat([atk.attack(model, xb, yb).x_adv
                           for xb, yb in zip(x.split(batch_size), y.split(batch_size))])
        with attack_mode(model), torch.no_grad():
            fooled = torch.cat([model(xb).argmax(1) for xb in x_adv.split(batch_size)]) != y
        adv_scores = _scores(detector, x_adv, batch_size)
        if successful_only:
            out[float(eps)] = (clean_scores[ok], adv_scores[ok & fooled])
        else:
            out[float(eps)] = (clean_scores, adv_scores)
    return out


def detection_metrics(
    name: str,
    detector: nn.Module,
    model: nn.Module,
    data: ImageSet | tuple[torch.Tensor, torch.Tensor],
    epsilons: Sequence[float],
    bins: ScoreBins,
    **kwargs: object,
) -> dict[str, int]:
    """A site's detection report: binned score histograms per eps (see :func:`detection_scores`)."""
    x = data.images if isinstance(data, ImageSet) else data[0]
    out: dict[str, int] = {"num-examples": int(len(x))}
    scores = detection_scores(detector, model, data, epsilons, **kwargs)  # type: ignore[arg-type]
    for eps, (clean, adv) in scores.items():
        out.update(encode_histograms(name, eps, bins.histogram(clean), bins.histogram(adv)))
    return out
