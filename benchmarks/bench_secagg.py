"""Benchmark of secure aggregation (SecAgg+) against the plain round at 10, 50 and 100 sites.

Run ``OMP_NUM_THREADS=1 python benchmarks/bench_secagg.py`` (``--help`` for options). Every
site is the real ClientApp (``fedaegis.client.app.app``: its mods, its data partition of the
embedded PneumoniaMNIST, the CNN) called in this process, one message after another, as one
Ray actor would; the server is the real strategy (Flower's FedAvg from ``build_strategy``, or
it wrapped in ``SecureAggregation``). For each number of sites it runs, interleaved, ``--repeats``
plain and secure evaluation rounds (clean evaluation and ``--attacks`` at 8/255 on every site's
test split) and training rounds (``--local-epochs`` of local training, FedAvg), and prints:

* time per round (median): the secure round over the plain one, wall-clock and this process's
  CPU time (the sites and the server all run in it; CPU time is less swayed by other jobs);
* bytes per round: every message's content, both ways, serialised as Flower sends it
  (``recorddict_to_proto``), secure over plain.

Flower's transport (SuperLink, Ray) is left out on both sides: it adds the same per-message
cost to each extra message of the protocol (3 queries per site per round).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from types import SimpleNamespace

warnings.filterwarnings("ignore")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", default="10,50,100")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--attacks", default="fgsm")
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--neighbours", type=int, default=12)
    parser.add_argument("--phases", default="evaluate,train", help="evaluate, train or both")
    args = parser.parse_args()

    import os

    os.environ.setdefault("FEDAEGIS_HOME", tempfile.mkdtemp(prefix="fedaegis-bench-secagg-"))
    # At 100 sites a site holds about 6 test and 47 training images: the default site policy
    # refuses groups that small. The benchmark's sites hold a policy that lets them through
    # without DP noise (the conditions of the figures measured before the site policy existed).
    os.makedirs(os.environ["FEDAEGIS_HOME"], exist_ok=True)
    policy = os.path.join(os.environ["FEDAEGIS_HOME"], "bench-site-policy.toml")
    with open(policy, "w") as f:
        f.write("[release]\nmin-cell-size = 0\nmin-eval-samples = 1\nmin-train-samples = 1\n"
                "min-batch-size = 1\neval-sizes = []\n[dp]\nrequired = false\n")
    os.environ.setdefault("FEDAEGIS_SITE_POLICY", policy)
    import torch
    from flwr.app import ArrayRecord, ConfigRecord, Context, RecordDict
    from flwr.common.serde import recorddict_to_proto
    from flwr.supercore.task_identity import TaskIdentity

    from fedaegis.client.app import app as client_app
    from fedaegis.server.app import client_config
    from fedaegis.server.secure_evaluation import SecureAggregation
    from fedaegis.server.strategies import build_strategy
    from fedaegis.shared.run.config import RunConfig, fedaegis_home
    from fedaegis.shared.reply.secagg import simulation_keys
    from fedaegis.shared.models.tasks import build_task_model, model_meta

    import logging

    from flwr.supercore.logger import update_console_handler

    update_console_handler(level=logging.WARNING)  # Flower's per-round INFO
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1

    class Grid:
        """Hands each message to its site's ClientApp and counts the bytes both ways."""

        def __init__(self, n: int) -> None:
            self.run = SimpleNamespace(run_id=1)
            self.sites = {1000 + i: Context(run_id=1, node_id=1000 + i, state=RecordDict(), run_config={},
                                            node_config={"partition-id": i, "num-partitions": n})
                          for i in range(n)}
            self.bytes = 0

        def get_node_ids(self):
            return list(self.sites)

        def send_and_receive(self, messages, timeout=None):
            out = []
            for msg in messages:
                self.bytes += recorddict_to_proto(msg.content).ByteSize()
                reply = client_app(msg, self.sites[msg.metadata.dst_node_id])
                if not reply.has_error():
                    self.bytes += recorddict_to_proto(reply.content).ByteSize()
                out.append(reply)
            return out

    print(f"{'sites':>5} {'phase':>9} {'plain s':>8} {'secure s':>9} {'time x':>7} "
          f"{'plain cpu':>8} {'secure cpu':>9} {'cpu x':>6} {'plain MB':>9} {'secure MB':>10} {'bytes x':>8}")
    for n in [int(s) for s in args.sites.split(",")]:
        cfg = RunConfig.from_flower({"num-sites": n, "min-sites": n, "attacks": args.attacks, "epsilons": "8/255",
                                     "local-epochs": args.local_epochs, "min-cell-size": 0})
        simulation_keys(fedaegis_home() / "simulation-keys", n)
        torch.manual_seed(0)
        arrays = ArrayRecord(build_task_model(model_meta(cfg)).state_dict())
        base = client_config(cfg)
        times: dict[tuple[str, bool], list[float]] = {}
        cpus: dict[tuple[str, bool], list[float]] = {}  # this process's CPU time: less swayed by other load
        sizes: dict[tuple[str, bool], int] = {}
        for rep in range(args.repeats + 1):  # the first pass loads every site's data: not timed
            for phase in args.phases.split(","):
                for secure in (False, True):
                    grid = Grid(n)
                    inner = build_strategy(cfg)
                    strategy = (SecureAggregation(inner, train=phase == "train", evaluate=phase == "evaluate",
                                                  neighbours=args.neighbours) if secure else inner)
                    config = ConfigRecord({**dict(base), "server-round": rep + 1})
                    start, cpu = time.perf_counter(), time.process_time()
                    if phase == "evaluate":
                        msgs = strategy.configure_evaluate(rep + 1, arrays, config, grid)
                        result = strategy.aggregate_evaluate(rep + 1, grid.send_and_receive(list(msgs)))
                        assert result is not None and result["num-examples"] > 0
                    else:
                        msgs = strategy.configure_train(rep + 1, arrays, config, grid)
                        new, _ = strategy.aggregate_train(rep + 1, grid.send_and_receive(list(msgs)))
                        assert new is not None
                    if rep:
                        times.setdefault((phase, secure), []).append(time.perf_counter() - start)
                        cpus.setdefault((phase, secure), []).append(time.process_time() - cpu)
                        sizes[(phase, secure)] = grid.bytes
        for phase in args.phases.split(","):
            plain, secure = (statistics.median(times[(phase, s)]) for s in (False, True))
            plain_cpu, secure_cpu = (statistics.median(cpus[(phase, s)]) for s in (False, True))
            pb, sb = sizes[(phase, False)], sizes[(phase, True)]
            print(f"{n:>5} {phase:>9} {plain:>8.2f} {secure:>9.2f} {secure / plain:>7.2f} "
                  f"{plain_cpu:>8.2f} {secure_cpu:>9.2f} {secure_cpu / plain_cpu:>6.2f} "
                  f"{pb / 1e6:>9.2f} {sb / 1e6:>10.2f} {sb / pb:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
