"""Peak memory of one simulated site actor at 224 px: images kept as stored vs eager float32.

Run ``python benchmarks/bench_memory.py`` (``--help`` for options). Each mode of each phase runs
in a fresh process, as a Ray actor does, on a site of real BloodMNIST images (the issue's example)
at ``--size`` px, and reports its peak resident set size (``ru_maxrss``):

* ``--phase train``: a 10,000-image training split (``--images``); ``--steps`` training steps of
  the model on batches of ``--batch-size``;
* ``--phase evaluate``: the test split of such a site (``--test-images``, 2,000 by default: a
  fifth of it); the site's clean evaluation of the whole split (``evaluate_local``) and PGD-10
  (``attack-pgd-steps``) at ``--epsilons`` on its ``--attack-samples`` images (the run config's
  default; 0: the whole split), as ``evaluate_robustness`` runs it;
* ``--phase both``: the two, one after the other (each mode of each in its own process).

Modes:

* ``lazy``: what a site does now: images stay uint8 as stored, each batch is resized and
  scaled to float32 when it is drawn (shared/data/transforms.py);
* ``eager``: the baseline measured in the same run: the whole split resized to float32 once
  and held (what the loaders, and for the test split the site, did before), filled into one
  preallocated tensor.

It prints both peaks, the bare interpreter's (torch imported), and the ratio eager / lazy.
Goal (issue 17): at most 2 GB per actor at 224 px. ``--channels 3`` keeps BloodMNIST in colour
(eager float32 then needs about 6 GB more for training, 1.2 GB more for the test split).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bloodmnist" / "bloodmnist.npz"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _held(data):
    """``data`` as one float32 tensor, filled batch by batch into a preallocated one (the eager baseline)."""
    import torch

    from fedaegis.shared.data import ImageSet

    held = torch.empty(tuple(data.images.shape), dtype=torch.float32)
    for i in range(0, len(data), 256):
        held[i : i + 256] = data.images[i : i + 256]
    return ImageSet(held, data.labels, data.num_classes, data.source)


def _site_split(split: str, images: int, args: argparse.Namespace, mode: str):
    import torch

    from fedaegis.shared.data import load_site_data

    data = load_site_data(str(args.data), split=split, image_size=(args.size, args.size), channels=args.channels)
    data = data.subset(torch.arange(min(images, len(data))))
    return _held(data) if mode == "eager" else data


def _train(data, model, args: argparse.Namespace) -> None:
    import torch
    import torch.nn.functional as F

    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(args.steps):
        idx = torch.randint(len(data), (args.batch_size,), generator=gen)
        loss = F.cross_entropy(model(data.images[idx]), data.labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


def _evaluate(data, model, args: argparse.Namespace) -> dict:
    """The site's evaluation round: clean figures on the whole split, then PGD on its attack subset."""
    from fedaegis.client.robustness import attack_subset, evaluate_robustness
    from fedaegis.shared.run.config import RunConfig
    from fedaegis.shared.training import evaluate_local

    cfg = RunConfig(attacks="pgd", epsilons=args.epsilons, attack_samples=args.attack_samples, model=args.model,
                    in_channels=args.channels, image_size=args.size, num_classes=data.num_classes)
    clean = evaluate_local(model, data)
    robust = evaluate_robustness(model, attack_subset(data, cfg.attack_samples, seed=0), cfg, seed=0)
    attacked = sum(v for k, v in robust.items() if ".eps=" in k and k.endswith(".n-count"))  # per cell, not the clean count
    return {"clean_n": clean["num-examples"], "attacked": attacked, "pgd_steps": cfg.attack_pgd_steps}


def worker(mode: str, phase: str, args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(1)
    bare = _peak_mb()
    from fedaegis.shared.models import build_model

    start = time.perf_counter()
    split, images = ("train", args.images) if phase == "train" else ("test", args.test_images)
    data = _site_split(split, images, args, mode)
    loaded = time.perf_counter() - start
    model = build_model(args.model, in_channels=args.channels, num_classes=data.num_classes, norm="group",
                        image_size=args.size)
    start = time.perf_counter()
    extra = _train(data, model, args) if phase == "train" else _evaluate(data, model, args)
    return {"mode": mode, "phase": phase, "images": len(data), "peak_mb": _peak_mb(), "bare_mb": bare,
            "load_s": loaded, "run_s": time.perf_counter() - start, **(extra or {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="a MedMNIST .npz (default: real BloodMNIST)")
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--channels", type=int, default=1, choices=(1, 3))
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--phase", choices=("train", "evaluate", "both"), default="train")
    parser.add_argument("--test-images", type=int, default=2_000, help="evaluate: images of the test split")
    parser.add_argument("--attack-samples", type=int, default=256,
                        help="evaluate: images attacked (the run config's default; 0: the whole split)")
    parser.add_argument("--epsilons", default="8/255", help="evaluate: PGD budgets")
    parser.add_argument("--worker", choices=("lazy", "eager"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.phase, args)))
        return
    phases = ("train", "evaluate") if args.phase == "both" else (args.phase,)
    for phase in phases:
        results = {}
        for mode in ("lazy", "eager"):
            cmd = [sys.executable, __file__, "--worker", mode, *sys.argv[1:], "--phase", phase]  # the last one counts
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results[mode] = json.loads(out.strip().splitlines()[-1])
            r = results[mode]
            what = (f"{r['images']} training images, {args.steps} steps" if phase == "train" else
                    f"{r['images']} test images, clean + PGD-{r['pgd_steps']} on {r['attacked']}")
            print(f"{phase:8s} {mode:5s}: peak RSS {r['peak_mb']:8.0f} MB  (interpreter with torch "
                  f"{r['bare_mb']:.0f} MB; {what} at {args.size} px, {args.channels} channel(s); "
                  f"load {r['load_s']:.1f} s, run {r['run_s']:.1f} s)")
        lazy, eager = results["lazy"]["peak_mb"], results["eager"]["peak_mb"]
        print(f"{phase:8s} eager / lazy peak: {eager / lazy:.2f}x; lazy actor "
              f"{'within' if lazy <= 2048 else 'ABOVE'} the 2 GB goal")


if __name__ == "__main__":
    main()
