"""Minimum-norm attacks and AutoAttack against torchattacks, image by image.

Run ``python benchmarks/bench_min_norm.py`` (``--help`` for options). It trains the
SmallCNN of ``bench_attacks.py`` on real BloodMNIST (8 classes) and, on a batch of
test images, in one process with a fixed thread count:

* minimum-norm C&W-L2 and FAB (Linf, L2) at ``eps=inf`` against torchattacks at equal
  steps: successes, mean norm on the images both fool (ratio ours / theirs) and wall
  time (best of ``--repeats``, interleaved); FMN (no torchattacks counterpart) alone;
* AutoAttack at torchattacks' own budget (``torchattacks.AutoAttack``: APGD-CE and
  APGD-T with 10 steps, FAB-T with 10 steps, all ``n_classes - 1`` target classes,
  Square with 5000 queries) over ``--seeds`` seeds: images fooled by one library and
  not the other, and for each image torchattacks fools and we do not, which of
  torchattacks' stages fools it and whether our stage of the same name does.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_attacks import load, train  # noqa: E402

from fedaegis.shared.attacks import build_attack  # noqa: E402

warnings.filterwarnings("ignore")
INF = float("inf")
STAGES = ("apgd-ce", "apgd-t", "fab-t", "square")


def outcome(model, x, y, x_adv, norm: str = "linf") -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: fooled (clean-correct, then misclassified) and the perturbation's norm."""
    x_adv = torch.as_tensor(x_adv)
    with torch.inference_mode():
        fooled = (model(x).argmax(1) == y) & (model(x_adv).argmax(1) != y)
    d = (x_adv - x).flatten(1)
    return fooled, d.abs().amax(1) if norm == "linf" else d.norm(dim=1)


def best_time(fns: dict[str, Callable[[], torch.Tensor]], repeats: int) -> dict[str, tuple[float, torch.Tensor]]:
    """Best wall time per run (interleaved, after one warm-up round) and the last output."""
    out: dict[str, tuple[float, torch.Tensor]] = {}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            x_adv = fn()
            dt = time.perf_counter() - t
            out[k] = (min(dt, out.get(k, (math.inf, None))[0]), x_adv)
    return out


def min_norm_table(model, x, y, classes: int, repeats: int) -> None:
    import torchattacks as ta

    k = classes - 1
    rows = [
        ("C&W-L2 1x100 vs c=1, 100", "l2",
         lambda: build_attack("cw", eps=INF, binary_steps=1, steps=100, c_init=1.0).attack(model, x, y).x_adv,
         lambda: ta.CW(model, c=1.0, steps=100, lr=0.01)(x, y)),
        ("C&W-L2 4x25 vs c=1, 100", "l2",
         lambda: build_attack("cw", eps=INF, binary_steps=4, steps=25, c_init=1.0).attack(model, x, y).x_adv,
         lambda: ta.CW(model, c=1.0, steps=100, lr=0.01)(x, y)),
        ("FAB-Linf 10 steps", "linf",
         lambda: build_attack("fab", eps=INF, steps=10, n_target_classes=k).attack(model, x, y).x_adv,
         lambda: ta.FAB(model, norm="Linf", eps=1.0, steps=10, n_classes=classes, multi_targeted=True,
                        seed=0)(x, y)),
        ("FAB-L2 10 steps", "l2",
         lambda: build_attack("fab", norm="l2", eps=INF, steps=10, n_target_classes=k).attack(model, x, y).x_adv,
         lambda: ta.FAB(model, norm="L2", eps=100.0, steps=10, n_classes=classes, multi_targeted=True,
                        seed=0)(x, y)),
    ]
    print(f"{'minimum norm (eps=inf)':28s} {'fooled':>13s} {'mean norm, both':>21s} {'ratio':>6s} "
          f"{'time s':>15s} {'ratio':>6s}")
    for label, norm, mine, theirs in rows:
        res = best_time({"ours": mine, "theirs": theirs}, repeats)
        fm, nm = outcome(model, x, y, res["ours"][1], norm)
        ft, nt = outcome(model, x, y, res["theirs"][1], norm)
        both = fm & ft
        a, b = float(nm[both].mean()), float(nt[both].mean())
        ta_, tb = res["ours"][0], res["theirs"][0]
        print(f"  {label:26s} {int(fm.sum()):5d} vs {int(ft.sum()):5d} {a:9.4f} vs {b:9.4f} {a / b:6.3f} "
              f"{ta_:6.2f} vs {tb:6.2f} {ta_ / tb:6.2f}")
    for norm in ("linf", "l2"):
        res = best_time({"ours": lambda norm=norm: build_attack("fmn", norm=norm, eps=INF, steps=100)
                         .attack(model, x, y).x_adv}, repeats)
        fm, nm = outcome(model, x, y, res["ours"][1], norm)
        print(f"  FMN-{norm} 100 steps (ours only) fooled {int(fm.sum())}, mean norm {float(nm[fm].mean()):.4f}, "
              f"{res['ours'][0]:.2f}s")


def autoattack_seeds(model, x, y, classes: int, eps: float, seeds: range, square_queries: int) -> None:
    import torchattacks as ta

    budget = dict(eps=eps, apgd_steps=10, fab_steps=10, n_target_classes=classes - 1,
                  square_queries=square_queries)
    print(f"\nAutoAttack at eps={eps * 255:.0f}/255, torchattacks' budget "
          f"(10 steps, {classes - 1} target classes, Square {square_queries} queries)")
    print(f"  {'seed':>4s} {'fooled ours':>11s} {'theirs':>7s} {'theirs only':>11s} {'ours only':>9s} "
          f"{'time ours s':>11s} {'theirs s':>9s}  theirs-only images: their stage -> our stage alone")
    for seed in seeds:
        t0 = time.perf_counter()
        ens = build_attack("autoattack", seed=seed, **budget)
        fm, _ = outcome(model, x, y, ens.attack(model, x, y).x_adv)
        t1 = time.perf_counter()
        theirs = ta.AutoAttack(model, norm="Linf", eps=eps, n_classes=classes, seed=seed)
        theirs._autoattack.attacks[-1].n_queries = square_queries
        with contextlib.redirect_stdout(io.StringIO()):
            ft, _ = outcome(model, x, y, theirs(x, y))
        t2 = time.perf_counter()
        lost = (ft & ~fm).nonzero().squeeze(1)
        notes = []
        if lost.numel():
            xs, ys = x[lost], y[lost]
            mine = dict(ens.components())
            for i in range(lost.numel()):
                xi, yi = xs[i:i + 1], ys[i:i + 1]
                their_stage = next((name for name, atk in zip(STAGES, theirs._autoattack.attacks)
                                    if bool(outcome(model, xi, yi, atk(xi, yi))[0][0])), "?")
                ours_alone = [name for name in STAGES if mine[name].attack(model, xi, yi).successes]
                notes.append(f"#{int(lost[i])}: {their_stage} -> {','.join(ours_alone) or 'none'}")
        print(f"  {seed:4d} {int(fm.sum()):11d} {int(ft.sum()):7d} {int((ft & ~fm).sum()):11d} "
              f"{int((fm & ~ft).sum()):9d} {t1 - t0:11.1f} {t2 - t1:9.1f}  {'; '.join(notes)}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--min-norm-batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds run: first-seed .. first-seed + seeds - 1")
    ap.add_argument("--eps", type=float, default=4 / 255)
    ap.add_argument("--square-queries", type=int, default=5000, help="torchattacks' AutoAttack uses 5000")
    ap.add_argument("--skip", choices=["min-norm", "autoattack"], default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x_tr, y_tr, x, y = load(4000, args.batch)
    model = train("cnn", x_tr, y_tr, steps=300, batch=64)
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.inference_mode():
        clean = float((model(x).argmax(1) == y).float().mean())
    print(f"BloodMNIST SmallCNN, clean accuracy {clean:.3f} on {x.shape[0]} test images, "
          f"threads={args.threads}")
    if args.skip != "min-norm":
        n = args.min_norm_batch
        min_norm_table(model, x[:n], y[:n], 8, args.repeats)
    if args.skip != "autoattack":
        autoattack_seeds(model, x, y, 8, args.eps, range(args.first_seed, args.first_seed + args.seeds),
                         args.square_queries)


if __name__ == "__main__":
    main()
