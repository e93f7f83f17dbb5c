"""What the AutoAttack presets cost, by class count: queries per sample and robust accuracy.

Run ``python benchmarks/bench_autoattack_presets.py`` (``--help`` for options). It trains the
small CNNs of the attack tests (``tests/attack_fixtures.py``: a few hundred Adam steps on real
PneumoniaMNIST, 2 classes, and BloodMNIST, 8 classes), and runs ``autoattack`` (standard: the
reference budgets) and ``autoattack-fast`` on the same test images at each epsilon, printing
queries per sample (a gradient or a forward pass of one sample counts one), robust accuracy
and wall time, and the fast/standard ratios. The targeted stages attack ``min(9, classes - 1)``
(standard) or ``min(3, classes - 1)`` (fast) classes, so the cost of a sample that survives
grows with the class count up to 10 classes; the README's table also gives that bound.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from attack_fixtures import trained  # noqa: E402

from fedaegis.shared.attacks import build_attack  # noqa: E402
from fedaegis.shared.attacks.ensemble import AutoAttack, AutoAttackFast  # noqa: E402


def survivor_bound(preset: type[AutoAttack], classes: int) -> int:
    """Queries a sample that survives every stage costs at most (restarts 1)."""
    a = preset()
    targets = min(a.n_target_classes, classes - 1)
    # APGD: one gradient per step (and its start); FAB: a gradient and a forward pass per step
    return (a.apgd_steps + 1) * (1 + targets) + 2 * targets * a.fab_steps + a.square_queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=64, help="test images per dataset")
    parser.add_argument("--eps", default="1/255,4/255", help="budgets (fractions allowed)")
    parser.add_argument("--datasets", default="pneumonia,blood", help="of tests/attack_fixtures.py")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    budgets = [float(n) / float(d or 1) for n, _, d in (e.partition("/") for e in args.eps.split(","))]
    print(f"{'data':10} {'classes':>7} {'eps':>7} {'preset':>16} {'queries/sample':>15} {'robust acc':>10} "
          f"{'time s':>7}")
    for name in args.datasets.split(","):
        t = trained(name)
        x, y = t.x[:args.samples], t.y[:args.samples]
        for eps in budgets:
            res = {}
            for preset in ("autoattack", "autoattack-fast"):
                start = time.perf_counter()
                r = build_attack(preset, eps=eps).attack(t.model, x, y)
                res[preset] = (r, time.perf_counter() - start)
                print(f"{name:10} {t.num_classes:7d} {eps * 255:5.0f}/255 {preset:>16} {r.queries / r.n:15.1f} "
                      f"{r.robust_accuracy:10.3f} {res[preset][1]:7.1f}", flush=True)
            (s, ts), (f, tf) = res["autoattack"], res["autoattack-fast"]
            print(f"{'':10} {'':7} {'':9} {'fast/standard':>16} {f.queries / max(s.queries, 1):15.3f} "
                  f"{f.robust_accuracy - s.robust_accuracy:+10.3f} {tf / ts:7.2f}")
    print("\nqueries of a sample that survives every stage (upper bound per sample):")
    for classes in (2, 8, 11):
        print(f"  {classes:2d} classes: standard {survivor_bound(AutoAttack, classes):6d}, "
              f"fast {survivor_bound(AutoAttackFast, classes):6d}")


if __name__ == "__main__":
    main()
