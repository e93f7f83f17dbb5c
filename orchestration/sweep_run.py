"""Run a sweep's points as Ray tasks, each point a Flower simulation in its own subprocess.

Why a subprocess: a Flower simulation cannot run inside a Ray task on the sweep's own Ray
instance. Flower sizes its actor pool from the whole cluster's CPUs, not from what is free, so
beside the sweep's tasks it waits for actors that can never start (checked with Flower 1.41:
a 2-site run in a 1-CPU task of a 3-CPU Ray hung in round 1), and it calls ``ray.shutdown()``
when done. So each Ray task (``num_cpus = cpus-per-run``, at most ``parallel`` in flight)
starts ``python -m fedaegis.orchestration.sweep_run``, which runs
:func:`~fedaegis.orchestration.simulation.simulate` on a private Ray instance of that size.
The run config goes over stdin, so a db-url password never shows in a process list.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import uuid as uuidlib
from dataclasses import dataclass
from typing import Any

from rich.table import Table

from ..shared.run.config import fedaegis_home
from ..shared.run.paths import private_dir, under, write_private
from ..shared.store import RunNotFoundError, RunStore
from .sweep import Sweep, SweepPoint, describe

log = logging.getLogger("fedaegis")

# A point's subprocess starts its own Ray: it must not join the cluster its task runs on.
_RAY_CONNECTION_VARS = ("RAY_ADDRESS", "RAY_JOB_ID", "RAY_NAMESPACE", "RAY_RUNTIME_ENV")
_OUTPUT_TAIL = 20_000


@dataclass
class PointResult:
    point: SweepPoint
    status: str  # completed | skipped (completed earlier) | failed | pending (dry run)
    run_id: int | None = None
    accuracy: float | None = None
    detail: str = ""


def run_sweep(plan: Sweep, *, dry_run: bool = False) -> list[PointResult]:
    """Run the points not yet ``completed`` in ``plan.db_url``; one result per point, in grid order."""
    store = RunStore(plan.db_url)  # creates the tables once, before runs race to do it
    name = plan.options.name
    done = {r["name"]: r["id"] for r in store.list_runs() if r["status"] == "completed"}
    results = {p.index: _stored(store, p, done[p.run_name(name)], "skipped")
               for p in plan.points if p.run_name(name) in done}
    todo = [p for p in plan.points if p.index not in results]
    log.info("sweep %s: %d points, %d already completed, %d to run",
             name, len(plan.points), len(results), len(todo))
    if dry_run:
        results.update({p.index: PointResult(p, "pending") for p in todo})
    elif todo:
        results.update(_schedule(plan, todo, store))
    return [results[p.index] for p in plan.points]


def _schedule(plan: Sweep, todo: list[SweepPoint], store: RunStore) -> dict[int, PointResult]:
    """Ray tasks, at most ``parallel`` in flight; a point's outcome is read from the database."""
    import ray

    from .simulation import SimulationResources, _quiet_environment, _start_ray

    opts = plan.options
    _quiet_environment()
    started_here = not ray.is_initialized()
    _start_ray(SimulationResources(ray_address=opts.ray_address or None,
                                   num_cpus=opts.parallel * opts.cpus_per_run, client_gpus=opts.client_gpus))
    task = ray.remote(num_cpus=opts.cpus_per_run, num_gpus=opts.gpus_per_run, max_retries=0)(run_point)
    logs = private_dir(under(fedaegis_home(), "sweeps", opts.name))
    queue = list(todo)
    in_flight: dict[Any, tuple[SweepPoint, str]] = {}  # Ray ObjectRef -> (point, its run's uuid)
    results: dict[int, PointResult] = {}
    try:
        while queue or in_flight:
            while queue and len(in_flight) < opts.parallel:
                point = queue.pop(0)
                run_uuid = uuidlib.uuid4().hex
                spec = {"config": {**point.config, "db-url": plan.db_url, "run-name": point.run_name(opts.name),
                                   "run-uuid": run_uuid},
                        "num-sites": opts.num_sites, "num-cpus": opts.cpus_per_run, "client-cpus": opts.client_cpus,
                        "client-gpus": opts.client_gpus}
                in_flight[task.remote(spec)] = (point, run_uuid)
                log.info("sweep %s: queued point %d (%s)", opts.name, point.index, describe(point.values))
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            point, run_uuid = in_flight.pop(ready[0])
            try:
                code, output = ray.get(ready[0])
            except Exception as exc:  # the task itself died (node lost, worker crash)
                code, output = -1, f"{type(exc).__name__}: {exc}"
            write_private(logs / f"{point.config_hash}.log", output.encode())
            results[point.index] = _outcome(store, point, run_uuid, code, output)
            log.info("sweep %s: point %d %s", opts.name, point.index, results[point.index].status)
    finally:
        for ref in in_flight:
            ray.cancel(ref, force=True)
        if started_here:
            ray.shutdown()
    return results


def run_point(spec: dict[str, Any]) -> tuple[int, str]:
    """Ray task: one simulation in a subprocess; returns its exit code and the tail of its output."""
    env = {k: v for k, v in os.environ.items() if k not in _RAY_CONNECTION_VARS}
    proc = subprocess.run(
        [sys.executable, "-m", "fedaegis.orchestration.sweep_run"],
        input=json.dumps(spec), capture_output=True, text=True, env=env, check=False,
    )
    return proc.returncode, (proc.stdout + proc.stderr)[-_OUTPUT_TAIL:]


def _outcome(store: RunStore, point: SweepPoint, run_uuid: str, code: int, output: str) -> PointResult:
    try:
        result = _stored(store, point, run_uuid, None)
    except RunNotFoundError:
        return PointResult(point, "failed", detail=_last_line(output) or f"exit code {code}")
    if result.status != "completed" or code != 0:
        result.status, result.detail = "failed", result.detail or _last_line(output) or f"exit code {code}"
    return result


def _stored(store: RunStore, point: SweepPoint, ref: int | str, status: str | None) -> PointResult:
    run = store.get_run(ref)
    last = run["rounds"][-1]["metrics"] if run["rounds"] else {}
    return PointResult(point, status or run["status"], run["id"], last.get("evaluate.accuracy"), run["error"])


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def summary_table(plan: Sweep, results: list[PointResult]) -> Table:
    """One row per point: its grid values, status, run id and final accuracy."""
    db = RunStore(plan.db_url).url
    table = Table(title=f"sweep {plan.options.name}: {len(results)} points in {db}")
    table.add_column("point", justify="right")
    for key in plan.grid_keys:
        table.add_column(key)
    for col in ("status", "run id", "accuracy", "hash"):
        table.add_column(col, justify="right" if col in ("run id", "accuracy") else "left")
    colours = {"completed": "green", "skipped": "cyan", "failed": "red", "pending": "yellow"}
    for r in results:
        status = f"[{colours[r.status]}]{r.status}[/]" + (f" ({r.detail})" if r.status == "failed" and r.detail else "")
        table.add_row(
            str(r.point.index), *(str(r.point.values[k]) for k in plan.grid_keys), status,
            "-" if r.run_id is None else str(r.run_id),
            "-" if r.accuracy is None or math.isnan(r.accuracy) else f"{r.accuracy:.4f}", r.point.config_hash[:8],
        )
    return table


def _die_with_parent() -> None:
    """Linux: end this simulation (and its Ray) if its Ray worker is killed, e.g. a cancelled sweep."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _main() -> int:
    """Subprocess entry: run the simulation described on stdin (see :func:`run_point`)."""
    from .simulation import SimulationResources, simulate

    _die_with_parent()
    spec = json.loads(sys.stdin.read())
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    ours = logging.getLogger("fedaegis")
    ours.handlers, ours.propagate = [handler], False
    ours.setLevel(logging.INFO)
    from flwr.supercore.logger import update_console_handler

    logging.getLogger("flwr").propagate = False
    update_console_handler(level=logging.WARNING)  # Flower's per-round INFO would drown our log
    from ..shared.run.config import RunConfig
    from ..shared.run.preflight import PreflightError
    from .preflight import preflight

    try:  # checked when the sweep was planned; the database and this machine's data again here
        preflight(RunConfig.from_flower({**spec["config"], "num-sites": spec["num-sites"]}), spec["num-sites"])
    except PreflightError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from ..server.app import RunFailed
    from .runtime import RuntimeFailure

    try:
        simulate(spec["config"], spec["num-sites"],
                 SimulationResources(num_cpus=spec["num-cpus"], client_cpus=spec["client-cpus"],
                                     client_gpus=spec.get("client-gpus", 0.0)))
    except (RunFailed, RuntimeFailure) as exc:  # stored as failed, with its site errors: one line, not a traceback
        print(f"error: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
