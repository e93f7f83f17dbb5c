"""Benchmark of the Ray simulation at 10, 50 and 100 sites against a plain torch loop.

Run ``OMP_NUM_THREADS=1 python benchmarks/bench_scale.py`` (``--help`` for options). For
each number of sites it runs a short federated simulation (``fedaegis.orchestration.
simulation.simulate``: FedAvg, federated evaluation, every round stored) of the CNN on the
embedded PneumoniaMNIST, IID over the sites, and reports:

* wall time of the first round (Ray actors import the ClientApp and load the data), of the
  later rounds (mean; the steady state every ratio uses), all from the database (a round's
  start to its commit), and the start-up (the rest of the simulation's wall time);
* peak memory of the whole process tree (this process, Ray's GCS, raylet and every worker),
  sampled from /proc every ``--sample-s``: summed RSS (shared pages counted in every process)
  and summed PSS (shared pages split among the processes sharing them);
* the federation's overhead: its time per round over the time of the same work (the whole
  training split for ``--local-epochs`` epochs, then the whole test split evaluated, with the
  same model, batch size and optimiser) in one plain torch loop in this process.

The union of the sites' partitions is the whole split at every scale, so every simulated
round does the same arithmetic as the plain loop, in smaller batches. Ray is started once (all
cores unless ``--cpus``) and serves every scale; its start-up is reported separately.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")

PAGE = os.sysconf("SC_PAGE_SIZE")


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        kids.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return kids


def tree_memory(root: int) -> tuple[int, int, int]:
    """(summed RSS bytes, summed PSS bytes, processes) of ``root`` and its descendants."""
    kids = _children()
    todo, rss, pss, n = [root], 0, 0, 0
    while todo:
        pid = todo.pop()
        todo += kids.get(pid, [])
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
            n += 1
        except (OSError, ValueError):
            continue
    return rss, pss, n


class PeakSampler:
    """Samples :func:`tree_memory` of this process in a thread; keeps the peaks."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.rss = self.pss = self.procs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, pss, n = tree_memory(os.getpid())
            self.rss, self.pss, self.procs = max(self.rss, rss), max(self.pss, pss), max(self.procs, n)
            self._stop.wait(self.every_s)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def plain_loop(rounds: int, epochs: int, batch_size: int, lr: float, seed: int) -> tuple[float, float]:
    """Seconds per round of the same training and evaluation in one torch loop, and final accuracy."""
    import torch
    import torch.nn.functional as F

    from fedaegis.shared.data import load_site_data
    from fedaegis.shared.models import build_model

    kw = dict(image_size=(28, 28), num_classes=2, seed=seed)
    train = load_site_data("embedded:pneumoniamnist", split="train", **kw)
    test = load_site_data("embedded:pneumoniamnist", split="test", **kw)
    torch.manual_seed(seed)
    model = build_model("cnn", in_channels=1, num_classes=2, spatial_dims=2, norm="group")
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    acc = float("nan")
    for _ in range(rounds):
        model.train()
        for _ in range(epochs):
            for idx in torch.randperm(len(train), generator=gen).split(batch_size):
                loss = F.cross_entropy(model(train.images[idx]), train.labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        model.eval()
        correct = 0
        with torch.inference_mode():
            for idx in torch.arange(len(test)).split(256):
                correct += int((model(test.images[idx]).argmax(1) == test.labels[idx]).sum())
        acc = correct / len(test)
    return (time.perf_counter() - t0) / rounds, acc


def federated(sites: int, args: argparse.Namespace, db: str) -> dict:
    from datetime import datetime

    from fedaegis.orchestration.simulation import SimulationResources, simulate
    from fedaegis.shared.store import RunStore

    overrides = {"num-server-rounds": args.rounds, "local-epochs": args.local_epochs, "db-url": db,
                 "run-name": f"bench-scale-{sites}", "seed": args.seed, "min-cell-size": args.min_cell_size,
                 "class-weighting": "none"}
    resources = SimulationResources(num_cpus=args.cpus, client_cpus=args.client_cpus,
                                    client_memory_mb=args.client_memory)
    with PeakSampler(args.sample_s) as peak:
        t0 = time.perf_counter()
        run_uuid = simulate(overrides, sites, resources)
        wall = time.perf_counter() - t0
    run = RunStore(db).get_run(run_uuid)
    rounds = run["rounds"]
    per_round = [(datetime.fromisoformat(r["finished_at"]) - datetime.fromisoformat(r["started_at"])).total_seconds()
                 for r in rounds]
    last = rounds[-1]["metrics"] if rounds else {}
    later = per_round[1:] or per_round
    return {"sites": sites, "status": run["status"], "rounds": len(rounds), "wall": wall,
            "first_s": per_round[0] if per_round else float("nan"), "round_s": sum(later) / max(len(later), 1),
            "startup": wall - sum(per_round),
            "rss": peak.rss, "pss": peak.pss, "procs": peak.procs,
            "accuracy": last.get("evaluate.accuracy", float("nan")),
            "counted": int(last.get("evaluate.num-examples", 0)),
            "suppressed": int(last.get("evaluate.suppressed-count", 0)),
            "failures": sum(r["failures"] for r in rounds)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", default="10,50,100")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--local-epochs", type=int, default=1)
    ap.add_argument("--cpus", type=int, default=None, help="CPUs of the local Ray instance (default: all)")
    ap.add_argument("--client-cpus", type=float, default=1.0)
    ap.add_argument("--client-memory", type=int, default=0, help="MB reserved per Ray actor")
    ap.add_argument("--min-cell-size", type=int, default=5,
                    help="run config min-cell-size (the default 10 suppresses every site's evaluation at "
                         "100 sites: 6 or 7 test images each)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the plain loop")
    ap.add_argument("--sample-s", type=float, default=0.25, help="memory sampling period")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    state = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    os.environ.setdefault("FEDAEGIS_HOME", str(state / "home"))
    os.environ.setdefault("FLWR_HOME", str(state / "flwr"))
    db = f"sqlite:///{state / 'runs.db'}"
    import logging

    from flwr.supercore.logger import update_console_handler

    update_console_handler(level=logging.WARNING)

    base_rss, base_pss, _ = tree_memory(os.getpid())
    plain_s, plain_acc = plain_loop(args.rounds, args.local_epochs, 32, 1e-3, args.seed)
    print(f"plain torch loop ({args.threads} thread): {plain_s:.2f} s per round "
          f"(training split x {args.local_epochs} epoch(s) + test split), accuracy {plain_acc:.3f}; "
          f"process {base_rss / 2**20:.0f} MB RSS before")

    results = [federated(int(n), args, db) for n in args.sites.split(",")]
    print(f"\n{args.rounds} rounds, {args.local_epochs} local epoch(s), CNN on PneumoniaMNIST (IID), "
          f"{os.cpu_count()} cores, min-cell-size {args.min_cell_size}")
    head = (f"{'sites':>5s} {'status':>9s} {'round 1 s':>9s} {'s/round':>8s} {'start s':>8s} {'peak RSS MB':>11s} "
            f"{'peak PSS MB':>11s} {'procs':>5s} {'accuracy':>8s} {'counted':>7s} {'suppr.':>6s} {'fail':>4s}")
    print(head)
    for r in results:
        print(f"{r['sites']:5d} {r['status']:>9s} {r['first_s']:9.2f} {r['round_s']:8.2f} {r['startup']:8.2f} "
              f"{r['rss'] / 2**20:11.0f} {r['pss'] / 2**20:11.0f} {r['procs']:5d} {r['accuracy']:8.3f} "
              f"{r['counted']:7d} {r['suppressed']:6d} {r['failures']:4d}")
    print("\n== ratios")
    for r in results:
        print(f"  {r['sites']:3d} sites: federated s/round / plain loop s/round {r['round_s'] / plain_s:8.2f}")
    first = results[0]
    for r in results[1:]:
        print(f"  s/round at {r['sites']} / at {first['sites']} sites {r['round_s'] / first['round_s']:17.2f}")
        print(f"  peak PSS at {r['sites']} / at {first['sites']} sites {r['pss'] / first['pss']:16.2f}")
    print(f"\nruns stored in {db}")


if __name__ == "__main__":
    main()
