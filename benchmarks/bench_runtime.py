"""What Flower's supported Simulation Runtime costs ``fedaegis simulate``, against the deprecated path.

Run ``OMP_NUM_THREADS=1 python benchmarks/bench_runtime.py`` (``--help`` for options). It runs
the same short federation (CNN on the embedded PneumoniaMNIST, FedAvg, every round stored)
``--repeats`` times each way, interleaved so that load from other processes hits both alike:

* ``simulate``: fedaegis' path, a private SuperLink in simulation mode per run, ``flwr run``,
  its log stream followed, everything stopped by PID (:mod:`fedaegis.orchestration.runtime`);
* baseline: ``flwr.simulation.run_simulation`` in this process (deprecated by Flower 1.41), with
  the same ServerApp, ClientApp, sites and actor resources, Ray started and stopped per run.

It prints each wall time and the ratio of the medians; the difference is the fixed cost per
run (SuperLink and SuperExec start-up, the ``flwr`` CLI, the app's installation, the stream's
end), which does not grow with rounds or sites.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")


def _baseline(cfg: dict, sites: int, cpus: int) -> None:
    import ray
    from flwr.simulation import run_simulation

    from fedaegis.client.app import app as client_app
    from fedaegis.server.app import make_server_app

    ray.init(address="local", num_cpus=cpus, num_gpus=0, include_dashboard=False, _node_ip_address="127.0.0.1",
             logging_level="WARNING")
    try:
        run_simulation(server_app=make_server_app(cfg), client_app=client_app, num_supernodes=sites,
                       backend_name="ray", backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from flwr.supercore.logger import update_console_handler

    from fedaegis.orchestration.simulation import SimulationResources, simulate
    from fedaegis.shared.run.config import RunConfig
    from fedaegis.shared.store import RunStore

    update_console_handler(level=40)
    times: dict[str, list[float]] = {"simulate": [], "run_simulation (deprecated)": []}
    with tempfile.TemporaryDirectory(prefix="fedaegis-bench-") as tmp:
        db = f"sqlite:///{Path(tmp) / 'runs.db'}"
        for _ in range(args.repeats):
            base = {"num-server-rounds": args.rounds, "local-epochs": 1, "db-url": db, "min-sites": 2}
            start = time.monotonic()
            simulate(base, args.sites, SimulationResources(num_cpus=args.cpus))
            times["simulate"].append(time.monotonic() - start)
            cfg = RunConfig.from_flower({**base, "run-uuid": uuid.uuid4().hex, "num-sites": args.sites}).to_flower()
            start = time.monotonic()
            _baseline(cfg, args.sites, args.cpus)
            times["run_simulation (deprecated)"].append(time.monotonic() - start)
        runs = RunStore(db).list_runs()
        assert len(runs) == 2 * args.repeats and all(r["status"] == "completed" for r in runs), runs
    print(f"\n{args.sites} sites, {args.rounds} round(s), {args.cpus} CPUs, {args.repeats} runs each (interleaved)")
    for name, values in times.items():
        print(f"  {name:28s} " + "  ".join(f"{v:6.1f}s" for v in values) + f"   median {statistics.median(values):6.1f}s")
    ratio = statistics.median(times["simulate"]) / statistics.median(times["run_simulation (deprecated)"])
    diff = statistics.median(times["simulate"]) - statistics.median(times["run_simulation (deprecated)"])
    print(f"  simulate / run_simulation: {ratio:.2f}x ({diff:+.1f}s per run)")


if __name__ == "__main__":
    main()
