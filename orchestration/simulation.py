"""Run a federation of simulated hospitals through Flower's Simulation Runtime, on Ray.

Each run gets its own SuperLink in simulation mode (:mod:`.runtime`): Flower's supported path,
the one ``flwr run`` takes (``flwr.simulation.run_simulation`` is deprecated). Its
``flwr-simulation`` process starts the Ray instance the sites run on: a private one bound to
127.0.0.1, or, with ``ray_address``, the existing cluster. The actor plan (CPUs, and GPUs, per
site) travels as Flower's federation config, which takes whole CPUs only.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import tempfile
import threading
import uuid as uuidlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..shared.run.config import RunConfig, fedaegis_home

if TYPE_CHECKING:
    from flwr.serverapp import Grid

log = logging.getLogger("fedaegis")


@dataclass(frozen=True)
class SimulationResources:
    """How Ray runs the sites.

    Sites are run by a pool of Ray actors, each taking one site's message at a time, so
    memory grows with the pool, not with the number of sites: the pool holds as many
    actors as fit ``client_cpus`` each (and ``client_memory_mb``, when set) on the cluster,
    and never more than there are sites (see :func:`plan_actors`).
    """

    ray_address: str | None = None  # None: a private local Ray instance
    num_cpus: int | None = None  # local Ray only; default: all cores
    client_cpus: float = 1.0  # at least this many CPUs per actor (whole CPUs: see plan_actors)
    client_memory_mb: int = 0  # memory per actor the pool must fit; 0: none
    client_gpus: float = 0.0  # GPU share per actor (Flower takes fractions here)


RAY_GRANULARITY = 10_000  # Ray counts resources in units of 1/10000


def _round_down(cpus: float) -> float:
    """A CPU share Ray represents exactly; k actors of ``_round_down(cpu / k)`` fit ``cpu``."""
    return math.floor(cpus * RAY_GRANULARITY + 1e-6) / RAY_GRANULARITY


def plan_actors(
    nodes: list[tuple[float, float]], client_cpus: float, client_memory: float, num_sites: int,
    *, whole: bool = False,
) -> tuple[float, int]:
    """CPUs to reserve per actor, and how many actors Flower will then start.

    ``nodes`` are the cluster's (CPUs, memory bytes). Flower sizes its actor pool by CPUs
    alone (``int(node CPUs / num_cpus)`` per node); an actor Ray cannot place for lack of
    memory would wait forever, and actors beyond the number of sites only cost memory. So
    the CPU share per actor is raised from ``client_cpus`` until the pool fits
    ``client_memory`` per actor on every node and holds at most ``num_sites`` actors.
    ``whole`` keeps to whole CPUs, all that Flower's Simulation Runtime can express.
    """
    if client_cpus <= 0:
        raise ValueError(f"client_cpus: must be > 0, got {client_cpus}")
    if whole and client_cpus != int(client_cpus):
        raise ValueError(f"client_cpus: Flower's Simulation Runtime reserves whole CPUs per site, got {client_cpus}")
    nodes = [(cpu, mem) for cpu, mem in nodes if cpu > 0]

    def pool(c: float) -> int:
        return sum(int(cpu / c) for cpu, _ in nodes)

    def fits(c: float) -> bool:
        return all(int(cpu / c) * client_memory <= mem for cpu, mem in nodes)

    base = client_cpus
    candidates = {base} | {
        _round_down(cpu / k) for cpu, _ in nodes for k in range(1, int(cpu / base) + 1)
    } | {_round_down(cpu) + 1 / RAY_GRANULARITY for cpu, _ in nodes}  # leaves that node empty
    if whole:
        candidates = {float(math.floor(c)) for c in candidates} | {math.floor(cpu) + 1.0 for cpu, _ in nodes}
    for c in sorted(x for x in candidates if x >= base):
        if 1 <= pool(c) <= max(num_sites, 1) and fits(c):
            return c, pool(c)
    raise ValueError(
        f"no Ray node can host a site with {client_cpus} CPUs and {client_memory / 2**20:.0f} MB "
        f"(nodes: {[(cpu, round(mem / 2**20)) for cpu, mem in nodes]} CPUs, MB)"
    )


def _quiet_environment() -> None:
    """Keep Flower, Ray and telemetry state out of the user's home and off the network."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    home = fedaegis_home()
    os.environ.setdefault("FLWR_HOME", str(home / "flwr"))
    # Ray's unix socket paths must stay short (107 bytes): use /tmp unless told otherwise.
    os.environ.setdefault("RAY_TMPDIR", "/tmp/fedaegis-ray")
    Path(os.environ["RAY_TMPDIR"]).mkdir(parents=True, exist_ok=True)


def _start_ray(resources: SimulationResources) -> None:
    import ray

    if ray.is_initialized():
        return
    common: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "log_to_driver": True,
    }
    if resources.ray_address:
        ray.init(address=resources.ray_address, **common)
    else:
        ray.init(
            address="local",  # never join a cluster found in RAY_TMPDIR (use ray_address for that)
            num_cpus=resources.num_cpus or os.cpu_count(),
            num_gpus=None if resources.client_gpus else 0,  # GPUs only when asked for: Ray finds them
            _node_ip_address="127.0.0.1",
            _temp_dir=os.environ["RAY_TMPDIR"],
            **common,
        )


def _cluster_nodes(resources: SimulationResources) -> list[tuple[float, float]]:
    """(CPUs, memory bytes) of each node the sites will run on."""
    if resources.ray_address is None:  # the private Ray that flwr-simulation will start here
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.7  # Ray's default share
        return [(float(resources.num_cpus or os.cpu_count() or 1), float(memory))]
    import ray

    ray.init(address=resources.ray_address, include_dashboard=False, logging_level=logging.WARNING,
             log_to_driver=False)
    try:
        return [(float(n["Resources"].get("CPU", 0)), float(n["Resources"].get("memory", 0)))
                for n in ray.nodes() if n.get("Alive") and n.get("Resources")]
    finally:
        ray.shutdown()


def check_client_gpus(resources: SimulationResources, option: str = "--client-gpus") -> None:
    """``client_gpus``: a share of one GPU (0 to 1) or whole GPUs, which a private Ray must have.

    ``option``: how the error names the setting (a sweep file's ``[sweep] 'client-gpus' =``).
    """
    gpus = resources.client_gpus
    if gpus < 0 or (gpus > 1 and gpus != int(gpus)):
        raise ValueError(f"{option} {gpus:g}: must be a share of one GPU (0 to 1) or a whole number of GPUs")
    if gpus and resources.ray_address is None:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count < math.ceil(gpus):
            raise ValueError(f"{option} {gpus:g}: this machine has {count} CUDA GPU(s); "
                             "omit it to run the sites on the CPU")


def federation_config(resources: SimulationResources, num_sites: int, verbose: bool = False) -> dict[str, Any]:
    """Flower's federation config (``flwr run --federation-config``) for this actor plan.

    Flower's Simulation Runtime takes whole CPUs per site (``client-resources-num-cpus`` is an
    integer) and no memory reservation: a fractional ``client_cpus`` is refused, and
    ``client_memory_mb`` shrinks the pool (more CPUs per actor) until it fits each node's
    memory, without Ray reserving it.
    """
    if resources.client_cpus != int(resources.client_cpus):
        raise ValueError(
            f"--client-cpus {resources.client_cpus:g}: Flower's Simulation Runtime reserves whole CPUs "
            "per site; use 1 or more"
        )
    check_client_gpus(resources)
    nodes = _cluster_nodes(resources)
    cpus, actors = plan_actors(nodes, resources.client_cpus, resources.client_memory_mb * 2**20, num_sites,
                               whole=True)
    log.info("Ray: %d sites run by %d actors of %d CPUs%s%s each, on %d node(s)", num_sites, actors, cpus,
             f" and {resources.client_gpus:g} GPUs" if resources.client_gpus else "",
             f" (fitting {resources.client_memory_mb} MB)" if resources.client_memory_mb else "", len(nodes))
    fed: dict[str, Any] = {"num-supernodes": num_sites, "client-resources-num-cpus": int(cpus),
                           "client-resources-num-gpus": float(resources.client_gpus),
                           "init-args-logging-level": "DEBUG" if verbose else "WARNING",
                           "init-args-log-to-driver": True, "verbose": verbose}
    if resources.ray_address is None:  # a cluster brings its own CPUs and GPUs
        fed["init-args-num-cpus"] = int(nodes[0][0])
        if not resources.client_gpus:
            fed["init-args-num-gpus"] = 0
    return fed


def _runtime_env(resources: SimulationResources, exchange_log: Path, live_grid: str | None) -> dict[str, str]:
    """The environment of the run's SuperLink, and so of flwr-simulation and its Ray."""
    from .runtime_app import EXCHANGE_LOG, LIVE_GRID

    env = {k: v for k, v in os.environ.items() if k != LIVE_GRID}
    env.update({
        "FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "PYTHONUNBUFFERED": "1",
        EXCHANGE_LOG: str(exchange_log),
        # this process's import path (a checkout on PYTHONPATH, the current folder of `audit`)
        "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path),
    })
    if live_grid:
        env[LIVE_GRID] = live_grid
    if resources.ray_address:
        env["RAY_ADDRESS"] = resources.ray_address
    else:
        env["RAY_ADDRESS"] = "local"  # never join a cluster recorded in RAY_TMPDIR
        # Ray binds a node to the loopback address only where clusters are off (its switch for this)
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        # Ray prestarts one idle worker per CPU for the first driver; Flower's actors start their own
        # workers, so those only took CPU (importing Ray) while the sites started (4 workers -> 2)
        env.setdefault("RAY_prestart_worker_first_driver", "0")
        env.setdefault("RAY_enable_worker_prestart", "0")
        if not resources.client_gpus:
            # --client-gpus 0: the sites run on the CPU. Ray leaves a zero-GPU actor's
            # CUDA_VISIBLE_DEVICES alone (RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=0, above), so without
            # this every site would take the default device, the first GPU, unreserved by Ray.
            env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def _relay(verbose: bool, on_event: Callable[[dict[str, Any]], None] | None = None) -> Callable[[str], None]:
    """Show fedaegis' lines of the run's log stream through our logger; Flower's with ``verbose``.

    Progress events (``[fedaegis] EVENT {json}``, :mod:`fedaegis.server.progress`) go to
    ``on_event`` as dicts, never to the log.
    """
    from ..server.app import LOG_PREFIX
    from ..server.progress import EVENT_LEVEL, parse_event

    levels = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING, "ERROR": logging.ERROR,
              "CRITICAL": logging.CRITICAL}

    def on_line(line: str) -> None:
        at = line.find(LOG_PREFIX)  # a simulated site's line comes prefixed by Ray with its actor
        if at >= 0:
            level, _, message = line[at + len(LOG_PREFIX):].partition(" ")
            if level == EVENT_LEVEL:
                event = parse_event(message)
                if event is not None and on_event is not None:
                    on_event(event)
                return
            log.log(levels.get(level, logging.INFO), "%s", message)
        elif verbose:
            print(line, file=sys.stderr, flush=True)

    return on_line


def simulate(
    overrides: dict[str, Any],
    num_sites: int,
    resources: SimulationResources = SimulationResources(),
    *,
    verbose: bool = False,
    wrap_grid: Callable[[Grid], Grid] | None = None,
    client_app: str | None = None,
    live_grid: str | None = None,
    site_policy: str | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> str:
    """Run a simulated federation; returns the run's uuid (its key in the database).

    ``overrides`` are run-config keys (kebab-case) on top of :class:`RunConfig` defaults.
    ``client_app`` (``module:attr``) replaces fedaegis' own ClientApp at every site (``fedaegis
    audit`` uses it to check another site implementation against the protocol).
    The ServerApp runs in Flower's process, so ``wrap_grid`` sees the run's exchanges replayed
    after it ended (:mod:`.runtime_app`), each reply as the server received it; ``live_grid``
    (``module:attr`` of a grid wrapper) acts in the server while the run goes on.
    Raises :class:`~.runtime.RuntimeFailure` when Flower reports the run failed.
    ``site_policy`` is a policy TOML file every simulated site runs under (given to the sites as
    ``$FEDAEGIS_SITE_POLICY``; default: each site's own, see :mod:`fedaegis.shared.site.policy`).
    ``progress`` receives the run's progress events (:mod:`fedaegis.server.progress`) as they come.
    """
    if num_sites < 1:
        raise ValueError(f"num_sites: need at least one site, got {num_sites}")
    if overrides.get("num-sites", num_sites) not in (0, num_sites):
        raise ValueError(
            f"run config 'num-sites' = {overrides['num-sites']} but the simulation has {num_sites} sites"
        )
    if client_app is not None and not isinstance(client_app, str):
        raise TypeError("client_app: Flower's Simulation Runtime loads the ClientApp by reference: "
                        "pass 'module:attr'")
    overrides = {**overrides, "run-uuid": overrides.get("run-uuid") or uuidlib.uuid4().hex,
                 "num-sites": num_sites}
    cfg = RunConfig.from_flower(overrides)  # fail here, with the field named, not in Ray
    from ..shared.site.policy import POLICY_ENV, SitePolicy

    if site_policy:
        site_policy = str(Path(site_policy).expanduser().resolve())
        SitePolicy.from_toml(site_policy)  # a bad file fails here, with the field named
    elif os.environ.get(POLICY_ENV):  # the simulated sites inherit it: a bad one would fail at each
        SitePolicy.from_toml(os.environ[POLICY_ENV])
    if cfg.min_sites > num_sites:
        raise ValueError(f"run config 'min-sites' = {cfg.min_sites} exceeds the {num_sites} sites")
    record_site_policy(cfg.run_uuid, site_policy)
    _quiet_environment()
    # the simulated sites' signing keys, for every site of every run: a site whose policy demands
    # secure aggregation needs its key whatever the run config asks, and a folder that holds fewer
    # keys than this run's sites (left by a smaller run) must not leave the others without theirs
    from ..client.secure_aggregation import KEYS_DIR_ENV
    from ..shared.reply.secagg import simulation_keys

    simulation_keys(Path(os.environ.get(KEYS_DIR_ENV) or fedaegis_home() / "simulation-keys"), num_sites)
    fed = federation_config(resources, num_sites, verbose)

    from .runtime import ManagedSuperLink, write_app
    from .runtime_app import read_events, replay

    run_config, secret_db_url = _without_db_password(cfg.to_flower())
    with tempfile.TemporaryDirectory(prefix="fedaegis-sim-") as tmp:
        state = Path(tmp)
        app_dir = write_app(state / "app", {"serverapp": "fedaegis.orchestration.runtime_app:app",
                                            "clientapp": client_app or "fedaegis.client.app:app"},
                            run_config)
        exchanges = state / "exchanges.pickle"
        env = _runtime_env(resources, exchanges, live_grid)
        if secret_db_url:  # the ServerApp's environment, never the run config Flower sends to every site
            env["FEDAEGIS_DB_URL"] = secret_db_url
        if site_policy:
            from ..shared.site.policy import POLICY_ENV

            env[POLICY_ENV] = str(Path(site_policy).resolve())
        if progress is not None:
            from ..server.progress import PROGRESS_ENV

            env[PROGRESS_ENV] = "1"
        try:
            with _stop_on_sigterm(), ManagedSuperLink(state, env) as link:
                link.run(app_dir, fed, _relay(verbose, progress), ends=_end_line,
                         succeeded=lambda _: _stored_status(cfg)[0] == "completed",
                         failed=lambda _: _stored_failure(cfg))
        finally:  # a failed run's exchanges too: an audit reports what the sites sent before it failed
            if wrap_grid is not None and exchanges.exists():
                replay(read_events(exchanges), wrap_grid)
    return cfg.run_uuid


def _policy_record(run_uuid: str) -> Path:
    from ..shared.run.paths import name_problem, under

    if name_problem(run_uuid):
        raise ValueError(f"run-uuid: {name_problem(run_uuid)}")
    return under(fedaegis_home() / "simulations", f"{run_uuid}.site-policy")


def site_policy_fingerprint(site_policy: str | None) -> str:
    """What the simulated sites run under: the parsed policy (file, ``$FEDAEGIS_SITE_POLICY`` or built-in), hashed.

    Parsed, so comments and key order do not count; every field does.
    """
    import dataclasses
    import hashlib

    from ..shared.site.policy import POLICY_ENV, SitePolicy

    path = site_policy or os.environ.get(POLICY_ENV)
    policy = SitePolicy.from_toml(str(path)) if path else SitePolicy()
    fields = {f.name: getattr(policy, f.name) for f in dataclasses.fields(policy) if f.name != "source"}
    return hashlib.sha256(repr(sorted(fields.items())).encode()).hexdigest()


def resume_policy_problem(run_uuid: str, site_policy: str | None) -> str | None:
    """Why resuming ``run_uuid`` under ``site_policy`` would change what its sites release, or None.

    A resumed run goes on charging the sites' ledgers: under another policy its rounds would be
    released under other floors and budgets than the rounds already stored. Runs started before
    this record existed are not checked.
    """
    record = _policy_record(run_uuid)
    if not record.exists():
        return None
    if record.read_text().strip() != site_policy_fingerprint(site_policy):
        return (f"--site-policy: run {run_uuid} started under another site policy; resume it under the "
                "same one (the same --site-policy file, or none if it had none)")
    return None


def record_site_policy(run_uuid: str, site_policy: str | None) -> None:
    """Remember which site policy the simulated sites of ``run_uuid`` run under (refused if it changed)."""
    from ..shared.run.paths import write_private

    problem = resume_policy_problem(run_uuid, site_policy)
    if problem:
        raise ValueError(problem)
    write_private(_policy_record(run_uuid), site_policy_fingerprint(site_policy).encode())


def _without_db_password(run_config: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The run config without a ``db-url`` that holds a password, and that URL ("" when none).

    Flower sends the run config to every site and the ServerApp refuses a password in it
    (:func:`fedaegis.server.app.refuse_shared_credentials`): such a URL reaches the ServerApp
    as ``$FEDAEGIS_DB_URL`` instead.
    """
    url = str(run_config.get("db-url") or "")
    if not url:
        return run_config, ""
    from sqlalchemy.engine import make_url

    if not make_url(url).password:
        return run_config, ""
    return {**run_config, "db-url": ""}, url


def _end_line(line: str) -> bool:
    """Whether ``line`` is the ServerApp saying it stored its run as completed or failed (the
    database confirms it: a site's log line could say the same)."""
    from ..server.app import LOG_PREFIX, RUN_COMPLETED, RUN_FAILED

    return f"{LOG_PREFIX}INFO {RUN_COMPLETED} " in line or f"{LOG_PREFIX}ERROR {RUN_FAILED} " in line


def _stored_status(cfg: RunConfig) -> tuple[str, str]:
    """The run's status and error as the database holds them (the ServerApp's own verdict); ("", "") if absent."""
    from ..shared.store import RunStore

    store = RunStore(cfg.resolved_db_url)
    try:
        # a resumed run goes on under its stored id or uuid; it cannot have been stored completed
        # before (resume_point refuses a completed run), so only this run's end stores that
        refs = {cfg.run_uuid, cfg.resume_run} - {""}
        for r in store.list_runs():
            if refs & {str(r["id"]), r["uuid"]}:
                return r["status"], r["error"] or ""
        return "", ""
    finally:
        store.engine.dispose()


def _stored_failure(cfg: RunConfig) -> str | None:
    """The error the ServerApp stored with the run when it stored it as failed, else None.

    None for a resumed run: a failed run may be resumed, so its stored failure may be the old one.
    """
    if cfg.resume_run:
        return None
    status, error = _stored_status(cfg)
    return (error or "failed") if status == "failed" else None


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM (a cancelled sweep point) unwinds like Ctrl-C, so the SuperLink is stopped by PID."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
