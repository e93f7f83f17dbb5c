"""Peak memory of one simulated site actor at 224 px: images kept as stored vs eager float32.

Run ``python benchmarks/bench_memory.py`` (``--help`` for options). Each mode runs in a fresh
process, as a Ray actor does: it loads a 10,000-image site (real BloodMNIST training images,
the issue's example) at ``--size`` px, trains ``--steps`` steps of the model on batches of
``--batch-size``, and reports its peak resident set size (``ru_maxrss``):

* ``lazy``: what a site does now: images stay uint8 as stored, each batch is resized and
  scaled to float32 when it is drawn (shared/data/transforms.py);
* ``eager``: the baseline measured in the same run: the whole site resized to float32 once
  and held (what the loaders did before), filled into one preallocated tensor.

It prints both peaks, the bare interpreter's (torch imported), and the ratio eager / lazy.
Goal (issue 17): at most 2 GB per actor at 224 px. ``--channels 3`` keeps BloodMNIST in colour
(eager float32 then needs about 6 GB more).
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


def worker(mode: str, args: argparse.Namespace) -> dict:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
    bare = _peak_mb()
    from fedaegis.shared.data import ImageSet, load_site_data
    from fedaegis.shared.models import build_model

    start = time.perf_counter()
    data = load_site_data(str(args.data), split="train", image_size=(args.size, args.size), channels=args.channels)
    data = data.subset(torch.arange(min(args.images, len(data))))
    if mode == "eager":
        held = torch.empty(tuple(data.images.shape), dtype=torch.float32)
        for i in range(0, len(data), 256):
            held[i : i + 256] = data.images[i : i + 256]
        data = ImageSet(held, data.labels, data.num_classes, data.source)
    loaded = time.perf_counter() - start
    model = build_model(args.model, in_channels=args.channels, num_classes=data.num_classes, norm="group",
                        image_size=args.size)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(args.steps):
        idx = torch.randint(len(data), (args.batch_size,), generator=gen)
        loss = F.cross_entropy(model(data.images[idx]), data.labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {"mode": mode, "images": len(data), "peak_mb": _peak_mb(), "bare_mb": bare, "load_s": loaded}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="a MedMNIST .npz (default: real BloodMNIST)")
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--channels", type=int, default=1, choices=(1, 3))
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--worker", choices=("lazy", "eager"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return
    results = {}
    for mode in ("lazy", "eager"):
        cmd = [sys.executable, __file__, "--worker", mode, *sys.argv[1:]]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results[mode] = json.loads(out.strip().splitlines()[-1])
        r = results[mode]
        print(f"{mode:5s}: peak RSS {r['peak_mb']:8.0f} MB  (interpreter with torch {r['bare_mb']:.0f} MB; "
              f"{r['images']} images at {args.size} px, {args.channels} channel(s), load {r['load_s']:.1f} s)")
    lazy, eager = results["lazy"]["peak_mb"], results["eager"]["peak_mb"]
    print(f"eager / lazy peak: {eager / lazy:.2f}x; lazy actor {'within' if lazy <= 2048 else 'ABOVE'} the 2 GB goal")


if __name__ == "__main__":
    main()
