"""Cost by image size: per-image training step time and attack throughput, cnn / resnet18 / densenet121.

Run ``python benchmarks/bench_sizes.py`` (``--help`` for options; ``--quick`` for a smoke run,
``--device cuda`` on a GPU). For each model and size (28, 64, 128, 224 px) it takes real
PneumoniaMNIST test images, resized bilinearly to the size (the models see real X-ray content
at every size), and times in one process, warm-up then best of ``--repeats``, runs compared
with each other interleaved:

* one epoch of the sites' training loop (``fedaegis.shared.training.train_classifier``: Adam,
  cross-entropy, batches of ``--batch``) against a bare torch loop doing the same steps on a
  copy of the same model: seconds per image and the ratio ours / bare;
* PGD-10 (Linf 8/255, ours without early stopping, so both do the same 10 steps on every image)
  against torchattacks' PGD (same step size and random start): images per second and the ratio;
* AutoAttack, ``--autoattack fast`` (the default: ``autoattack-fast``) or ``standard``
  (``autoattack``, the reference budgets), ours (its work depends on how many images stay
  robust, so on the weights), in images per second and its time in torchattacks PGD-10s.

Models are built as a site builds them for the size (the ResNets' stem: small below 64 px,
MONAI's own from 64 px up) and freshly initialised (seeded): step times do not depend on the
weights; attack times of PGD-10 neither (no early stopping), those of AutoAttack do, so they
are indicative.
``densenet121`` is MONAI's DenseNet121 (registered in ``fedaegis.shared.models``; 28 px inputs
are lifted to 32 px inside the model).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedaegis.shared.training import train_classifier
from fedaegis.shared.attacks import build_attack
from fedaegis.shared.attacks.base import attack_mode
from fedaegis.shared.data import ImageSet
from fedaegis.shared.models import build_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pneumoniamnist" / "pneumoniamnist.npz"
EPS = 8 / 255
AUTOATTACK = {"fast": "autoattack-fast", "standard": "autoattack"}  # --autoattack: the registry's presets
warnings.filterwarnings("ignore")


def images(n: int, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` real test X-rays (both classes), resized to ``size`` px, in [0, 1]."""
    if not DATA.exists():
        sys.exit(f"dataset not found: {DATA}")
    with np.load(DATA) as d:
        x = torch.from_numpy(d["test_images"][:n].astype(np.float32) / 255.0).unsqueeze(1)
        y = torch.from_numpy(d["test_labels"][:n, 0].astype(np.int64))
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp_(0, 1)
    return x.to(device), y.to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_of(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device,
            warmup: bool = True) -> dict[str, float]:
    """Warm-up, then the best of ``repeats`` wall times of each function, interleaved."""
    times = {k: float("inf") for k in fns}
    for k, fn in fns.items():
        if warmup:
            fn()
    for _ in range(repeats):
        for k, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[k] = min(times[k], time.perf_counter() - start)
    return times


def bare_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, lr: float) -> None:
    """The baseline: a hand-written torch training epoch with the same batches and optimiser."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    for idx in order.split(batch):
        if len(idx) == 1:
            continue
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def torchattacks_pgd(model: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    import torchattacks

    atk = torchattacks.PGD(model, eps=EPS, alpha=2.5 * EPS / 10, steps=10, random_start=True)

    def run(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # with the robust accuracy, as ours returns
        adv = atk(x, y)
        with torch.no_grad():
            return (model(adv).argmax(1) == y).sum()

    return run


def measure(name: str, size: int, n: int, batch: int, repeats: int, device: torch.device,
            autoattack: str | None, warmup: bool = True) -> dict[str, float]:
    torch.manual_seed(0)
    x, y = images(n, size, device)
    model = build_model(name, in_channels=1, num_classes=2, norm="batch", image_size=size).to(device)  # the stem a site builds
    twin = copy.deepcopy(model)
    data = ImageSet(x, y, 2, f"pneumoniamnist@{size}")
    train = best_of({
        "ours": lambda: train_classifier(model, data, epochs=1, batch_size=batch, lr=1e-3, seed=0),
        "bare": lambda: bare_epoch(twin, x, y, batch, 1e-3),
    }, repeats, device, warmup)
    model.eval()
    ours_pgd = build_attack("pgd", eps=EPS, steps=10, early_stop=False)
    theirs = torchattacks_pgd(model)
    fns: dict[str, Callable[[], object]] = {
        "pgd": lambda: [ours_pgd.attack(model, x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)],
        "ta-pgd": lambda: [theirs(x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)],
    }
    if autoattack:
        aa = build_attack(AUTOATTACK[autoattack], eps=EPS)
        fns["aa"] = lambda: [aa.attack(model, x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)]
    with attack_mode(model):
        attack = best_of(fns, repeats, device, warmup)
    return {"train": train["ours"] / n, "bare": train["bare"] / n, **{k: n / v for k, v in attack.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--models", default="cnn,resnet18,densenet121")
    parser.add_argument("--sizes", default="28,64,128,224")
    parser.add_argument("--images", type=int, default=64, help="images per measurement")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--autoattack", choices=sorted(AUTOATTACK), default="fast",
                        help="the AutoAttack preset timed: fast (autoattack-fast) or standard (autoattack)")
    parser.add_argument("--no-autoattack", action="store_true", help="skip AutoAttack (the slowest column)")
    parser.add_argument("--no-warmup", action="store_true", help="time the first run (large models on a slow CPU)")
    parser.add_argument("--quick", action="store_true", help="8 images, 28 and 64 px, one repeat")
    args = parser.parse_args()
    if args.quick:
        args.images, args.batch, args.repeats, args.sizes = 8, 8, 1, "28,64"
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here")
    torch.set_num_threads(args.threads)
    print(f"device {device}, {args.threads} CPU thread(s), {args.images} images, batch {args.batch}, "
          f"best of {args.repeats}")
    head = (f"{'model':12} {'px':>4} {'train s/img':>11} {'bare s/img':>10} {'ours/bare':>9} {'PGD img/s':>9} "
            f"{'TA img/s':>9} {'TA/ours t':>9} {'AA img/s':>12} {'AA/TA-PGD t':>12}")
    if not args.no_autoattack:
        print(f"AA: {AUTOATTACK[args.autoattack]}")
    print(head)
    for name in args.models.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            r = measure(name, size, args.images, args.batch, args.repeats, device,
                        None if args.no_autoattack else args.autoattack,
                        not args.no_warmup)
            aa = (f"{r['aa']:12.3g} {r['ta-pgd'] / r['aa']:12.2f}" if "aa" in r
                  else f"{'-':>12} {'-':>12}")
            print(f"{name:12} {size:4d} {r['train']:11.4f} {r['bare']:10.4f} {r['train'] / r['bare']:9.2f} "
                  f"{r['pgd']:9.3g} {r['ta-pgd']:9.3g} {r['pgd'] / r['ta-pgd']:9.2f} {aa}", flush=True)
    print("ours/bare: training time ratio (1.00 = no overhead); TA/ours t: torchattacks' PGD-10 time over ours "
          "(above 1: ours faster); AA/TA-PGD t: the AutoAttack preset's time in torchattacks PGD-10s.")


if __name__ == "__main__":
    main()
