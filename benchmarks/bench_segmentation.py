"""Cost of the segmentation attacks relative to one forward/backward pass, 2D and 3D.

Run ``python benchmarks/bench_segmentation.py`` (``--help`` for options). It trains a
2D UNet (32x48 slices) and a 3D UNet (32x48x32 volumes) briefly on real hippocampus MRI
(``../shared/data/msd_hippocampus``; random data with ``--synthetic`` or when absent),
then times, in one process with a fixed thread count, one warm-up and best of
``--repeats``:

* the unit: one forward + input-gradient backward pass over the batch (``fb``), and a
  bare hand-written torch PGD loop as the floor an attack's bookkeeping adds to;
* every attack at eps 4/255 with ``--steps`` steps (L2 at the same per-voxel RMS budget);
  an ideal projected-gradient attack costs ``steps + 1`` fb (the last iterate is scored
  with one forward pass), DAG and ASMA stop early per sample once their goal is reached;
* the robust-Dice ensemble (all attacks) and the per-volume metrics (Dice + HD95);
* one adversarial training step (PGD, 3 steps, mix 0.5) relative to a plain training step.

Dice under attack is printed as well, so that a fast but ineffective attack stands out.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from fedaegis.shared.segmentation import (
    AdversarialTraining,
    SegmentationSet,
    build_segmenter,
    load_hippocampus,
    make_target,
    volume_scores,
)
from fedaegis.shared.training import train_segmenter
from fedaegis.shared.segmentation.attacks import attack_mode, build_attack, l2_radius, predict, robust_dice
from fedaegis.shared.segmentation.attacks.common import dice_ce
from fedaegis.shared.segmentation.metrics import mean_dice

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "msd_hippocampus"
EPS = 4 / 255
warnings.filterwarnings("ignore")


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` runs after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def synthetic(n: int, shape: tuple[int, ...], volumes: int) -> SegmentationSet:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, *shape, generator=g)
    y = torch.zeros(n, *shape, dtype=torch.long)
    sl = tuple(slice(s // 4, s // 2) for s in shape)
    y[(slice(None), *sl)] = 1
    y[(slice(None), *(slice(s // 2, 3 * s // 4) for s in shape))] = 2
    vi = torch.arange(n) % volumes
    return SegmentationSet(x, y, vi, tuple(f"v{i}" for i in range(volumes)))


def data(dims: int, n: int, use_real: bool) -> tuple[SegmentationSet, SegmentationSet]:
    """(training set, batch to attack): the batch comes from patients not trained on."""
    if use_real:
        d = load_hippocampus(DATA, spatial_dims=dims, max_volumes=40, seed=0)
        half = d.num_volumes // 2
        train, held = d.select_volumes(range(half)), d.select_volumes(range(half, d.num_volumes))
    else:
        shape = (32, 48) if dims == 2 else (32, 48, 32)
        train, held = synthetic(4 * n, shape, 8), synthetic(n, shape, 4 if dims == 2 else n)
    return train, _first(held, n) if dims == 2 else held.select_volumes(range(min(n, held.num_volumes)))


def _first(s: SegmentationSet, n: int) -> SegmentationSet:
    vi = s.volume_index[:n]
    used = vi.unique()
    remap = torch.full((s.num_volumes,), -1, dtype=torch.long)
    remap[used] = torch.arange(len(used))
    return SegmentationSet(s.images[:n], s.masks[:n], remap[vi], tuple(s.patient_ids[i] for i in used.tolist()))


def bench(dims: int, args: argparse.Namespace, use_real: bool) -> None:
    n = args.batch_2d if dims == 2 else args.batch_3d
    train, test = data(dims, n, use_real)
    torch.manual_seed(0)
    model = build_segmenter("unet", spatial_dims=dims, channels=(8, 16, 32, 64), num_res_units=0)
    train_segmenter(model, train, epochs=100, batch_size=16 if dims == 2 else 4, lr=3e-3,
                    max_steps=args.train_steps if dims == 2 else args.train_steps // 3)
    model.eval()
    x, y, vi = test.images, test.masks, test.volume_index
    print(f"\n{dims}D UNet (8,16,32,64), batch {tuple(x.shape)}, {test.num_volumes} volumes, "
          f"{args.steps} steps, eps 4/255, best of {args.repeats}")

    def fb() -> None:
        with attack_mode(model):
            xg = x.detach().requires_grad_(True)
            torch.autograd.grad(dice_ce(model(xg), y).sum(), xg)

    unit = best_of(fb, args.repeats)
    fwd = best_of(lambda: predict(model, x, batch_size=len(x)), args.repeats)

    def dice_of(xx: torch.Tensor) -> float:
        return float(mean_dice(volume_scores(predict(model, xx), y, vi, 3, hd95=False).dice).mean())

    print(f"  {'what':<22}{'seconds':>10}{'x fb':>8}   dice")
    print(f"  {'forward+backward (fb)':<22}{unit:>10.4f}{1.0:>8.2f}   {dice_of(x):.3f} (clean)")
    print(f"  {'forward only':<22}{fwd:>10.4f}{fwd / unit:>8.2f}")
    def bare_pgd() -> None:  # the minimum any Linf PGD must do: steps x fb, one final forward
        with attack_mode(model):
            xa = (x + torch.empty_like(x).uniform_(-EPS, EPS)).clamp(0, 1)
            for _ in range(args.steps):
                xg = xa.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(dice_ce(model(xg), y).sum(), xg)
                xa = torch.min(torch.max(xa + 2.5 * EPS / args.steps * g.sign(), x - EPS), x + EPS).clamp(0, 1)
            with torch.no_grad():
                model(xa)

    t = best_of(bare_pgd, args.repeats)
    print(f"  {'bare torch PGD loop':<22}{t:>10.4f}{t / unit:>8.2f}")
    target = make_target(predict(model, x), "shift:3")
    for name, norm in [("pgd", "linf"), ("pgd", "l2"), ("multiscale", "linf"), ("dag", "linf"), ("asma", "linf")]:
        eps = l2_radius(EPS, x) if norm == "l2" else EPS
        tm = target if name == "asma" else None
        out: dict[str, torch.Tensor] = {}

        def run(name: str = name, norm: str = norm, eps: float = eps, tm: torch.Tensor | None = tm) -> None:
            out["x"] = build_attack(name, eps=eps, norm=norm, steps=args.steps).perturb(model, x, y, tm)

        t = best_of(run, args.repeats)
        print(f"  {name + '-' + norm:<22}{t:>10.4f}{t / unit:>8.2f}   {dice_of(out['x']):.3f}")
    t = best_of(lambda: volume_scores(predict(model, x), y, vi, 3, hd95=True), args.repeats)
    print(f"  {'metrics (Dice+HD95)':<22}{t:>10.4f}{t / unit:>8.2f}")
    t = best_of(lambda: robust_dice(model, x, y, vi, ["pgd", "multiscale", "dag", "asma"], eps=EPS,
                                    steps=args.steps, target_mask=target, batch_size=len(x)), 1)
    print(f"  {'robust ensemble (4)':<22}{t:>10.4f}{t / unit:>8.2f}")
    step_set = _first(train, len(x)) if dims == 2 else train.select_volumes(range(min(len(x), train.num_volumes)))
    plain = best_of(lambda: train_segmenter(model, step_set, batch_size=len(x), max_steps=1), args.repeats)
    adv = AdversarialTraining(eps=EPS, steps=3, mix=0.5)
    hard = best_of(lambda: train_segmenter(model, step_set, batch_size=len(x), max_steps=1, adversarial=adv),
                   args.repeats)
    print(f"  {'train step':<22}{plain:>10.4f}{plain / unit:>8.2f}")
    print(f"  {'adv. train step (3)':<22}{hard:>10.4f}{hard / unit:>8.2f}   ({hard / plain:.1f}x a plain step)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-2d", type=int, default=64, help="slices per batch")
    p.add_argument("--batch-3d", type=int, default=4, help="volumes per batch")
    p.add_argument("--train-steps", type=int, default=150)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--dims", default="2,3")
    p.add_argument("--synthetic", action="store_true", help="random data instead of hippocampus MRI")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    use_real = not args.synthetic and (DATA / "imagesTr").is_dir()
    print(f"torch {torch.__version__}, {args.threads} threads, data: {'hippocampus MRI' if use_real else 'synthetic'}")
    for dims in (int(d) for d in args.dims.split(",")):
        bench(dims, args, use_real)


if __name__ == "__main__":
    main()
