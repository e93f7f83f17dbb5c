"""Benchmark of the label-only attacks (HopSkipJump, RayS) against ART's HopSkipJump.

Run ``python benchmarks/bench_label_only.py`` (``--help`` for options). It trains the
attack tests' SmallCNN on real PneumoniaMNIST, takes ``--samples`` correctly
classified test images, runs ART's Linf HopSkipJump for ``--iterations``
iterations while counting the rows it sends through the model, then gives ours
(and RayS) exactly that many queries per sample. It prints robust accuracy at
``--eps`` for each, our query grid (robust accuracy at a quarter, half and all of
the budget, from the same run) and wall-clock seconds with the ratio against ART,
all measured in this run, single-threaded.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedaegis.shared.attacks import build_attack

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


class Counted(nn.Module):
    """The model, counting the rows ART sends through it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.rows = model, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += len(x)
        return self.model(x.float())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=8, help="ART HopSkipJump max_iter")
    parser.add_argument("--eps", type=float, default=8.0, help="Linf budget in 1/255 units")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    import art.attacks.evasion as E
    from art.estimators.classification import PyTorchClassifier
    from attack_fixtures import trained

    t = trained("pneumonia")
    with torch.inference_mode():
        ok = t.model(t.x).argmax(1) == t.y
    model, x, y = t.model, t.x[ok][: args.samples], t.y[ok][: args.samples]
    eps = args.eps / 255
    counted = Counted(model).eval()
    clf = PyTorchClassifier(model=counted, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                            nb_classes=2, clip_values=(0.0, 1.0))
    np.random.seed(0)
    start = time.perf_counter()
    x_art = torch.as_tensor(E.HopSkipJump(clf, norm=np.inf, max_iter=args.iterations, verbose=False)
                            .generate(x.numpy())).float()
    art_s = time.perf_counter() - start
    budget = counted.rows // len(x)
    with torch.inference_mode():
        fooled = (model(x_art).argmax(1) != y) & ((x_art - x).flatten(1).abs().amax(1) <= eps + 1e-6)
    print(f"{len(x)} PneumoniaMNIST test images, Linf {args.eps:g}/255, ART HopSkipJump max_iter="
          f"{args.iterations}: {budget} queries per sample")
    print(f"{'attack':<14}{'robust acc':>11}{'at 1/4':>8}{'at 1/2':>8}{'q/sample':>10}{'seconds':>9}{'vs ART':>8}")
    print(f"{'ART HSJ':<14}{1 - float(fooled.float().mean()):>11.3f}{'':>8}{'':>8}{budget:>10}{art_s:>9.1f}"
          f"{1.0:>8.2f}")
    grid = [budget // 4, budget // 2]
    for name in ("hopskipjump", "rays"):
        start = time.perf_counter()
        r = build_attack(name, eps=eps, n_queries=budget, budgets=grid).attack(model, x, y)
        s = time.perf_counter() - start
        q1, q2 = (r.extra[f"robust_at_q{b}"] / len(x) for b in grid)
        print(f"{name:<14}{r.robust_accuracy:>11.3f}{q1:>8.3f}{q2:>8.3f}{r.queries / len(x):>10.0f}{s:>9.1f}"
              f"{s / art_s:>8.2f}")


if __name__ == "__main__":
    main()
