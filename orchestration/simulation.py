"""Run a federation of simulated hospitals on Ray, in this process, through Flower.

Ray is started here (bound to 127.0.0.1, or joined by address to an existing
cluster) before Flower's simulation engine sees it, so the engine reuses it.
"""

from __future__ import annotations

import logging
import math
import os
import uuid as uuidlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..shared.config import RunConfig, fedaegis_home

if TYPE_CHECKING:
    from flwr.clientapp import ClientApp
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
    client_cpus: float = 1.0  # at least this many CPUs per actor
    client_memory_mb: int = 0  # memory reserved per actor; 0: none


RAY_GRANULARITY = 10_000  # Ray counts resources in units of 1/10000


def _round_down(cpus: float) -> float:
    """A CPU share Ray represents exactly; k actors of ``_round_down(cpu / k)`` fit ``cpu``."""
    return math.floor(cpus * RAY_GRANULARITY + 1e-6) / RAY_GRANULARITY


def plan_actors(
    nodes: list[tuple[float, float]], client_cpus: float, client_memory: float, num_sites: int
) -> tuple[float, int]:
    """CPUs to reserve per actor, and how many actors Flower will then start.

    ``nodes`` are the cluster's (CPUs, memory bytes). Flower sizes its actor pool by CPUs
    alone (``int(node CPUs / num_cpus)`` per node); an actor Ray cannot place for lack of
    memory would wait forever, and actors beyond the number of sites only cost memory. So
    the CPU share per actor is raised from ``client_cpus`` until the pool fits
    ``client_memory`` per actor on every node and holds at most ``num_sites`` actors.
    """
    if client_cpus <= 0:
        raise ValueError(f"client_cpus: must be > 0, got {client_cpus}")
    nodes = [(cpu, mem) for cpu, mem in nodes if cpu > 0]

    def pool(c: float) -> int:
        return sum(int(cpu / c) for cpu, _ in nodes)

    def fits(c: float) -> bool:
        return all(int(cpu / c) * client_memory <= mem for cpu, mem in nodes)

    base = client_cpus
    candidates = {base} | {
        _round_down(cpu / k) for cpu, _ in nodes for k in range(1, int(cpu / base) + 1)
    } | {_round_down(cpu) + 1 / RAY_GRANULARITY for cpu, _ in nodes}  # leaves that node empty
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
            num_gpus=0,
            _node_ip_address="127.0.0.1",
            _temp_dir=os.environ["RAY_TMPDIR"],
            **common,
        )


def _client_resources(resources: SimulationResources, num_sites: int) -> dict[str, Any]:
    """Flower's ``client_resources`` for this cluster: see :func:`plan_actors`."""
    import ray

    memory = resources.client_memory_mb * 2**20
    nodes = [(float(n["Resources"].get("CPU", 0)), float(n["Resources"].get("memory", 0)))
             for n in ray.nodes() if n.get("Alive") and n.get("Resources")]
    cpus, actors = plan_actors(nodes, resources.client_cpus, memory, num_sites)
    log.info("Ray: %d sites run by %d actors of %.4g CPUs%s each, on %d node(s)", num_sites, actors, cpus,
             f" and {resources.client_memory_mb} MB" if memory else "", len(nodes))
    client_resources: dict[str, Any] = {"num_cpus": cpus, "num_gpus": 0.0}
    if memory:
        client_resources["memory"] = memory
    return client_resources


def simulate(
    overrides: dict[str, Any],
    num_sites: int,
    resources: SimulationResources = SimulationResources(),
    *,
    verbose: bool = False,
    wrap_grid: Callable[[Grid], Grid] | None = None,
    client_app: ClientApp | None = None,
    site_policy: str | None = None,
) -> str:
    """Run a simulated federation; returns the run's uuid (its key in the database).

    ``overrides`` are run-config keys (kebab-case) on top of :class:`RunConfig` defaults.
    ``client_app`` replaces fedaegis' own ClientApp at every site (``fedaegis audit`` uses it
    to check another site implementation against the protocol). ``site_policy`` is a
    policy TOML file every simulated site runs under (default: each site's own, see
    :mod:`fedaegis.shared.site_policy`).
    """
    if num_sites < 1:
        raise ValueError(f"num_sites: need at least one site, got {num_sites}")
    if overrides.get("num-sites", num_sites) not in (0, num_sites):
        raise ValueError(
            f"run config 'num-sites' = {overrides['num-sites']} but the simulation has {num_sites} sites"
        )
    overrides = {**overrides, "run-uuid": overrides.get("run-uuid") or uuidlib.uuid4().hex,
                 "num-sites": num_sites}
    cfg = RunConfig.from_flower(overrides)  # fail here, with the field named, not in Ray
    if site_policy:
        from ..shared.site_policy import SitePolicy

        site_policy = str(Path(site_policy).expanduser().resolve())
        SitePolicy.from_toml(site_policy)  # a bad file fails here, with the field named
    if cfg.min_sites > num_sites:
        raise ValueError(f"run config 'min-sites' = {cfg.min_sites} exceeds the {num_sites} sites")
    _quiet_environment()
    _start_ray(resources)

    from flwr.simulation import run_simulation

    from ..server.app import make_server_app

    if client_app is None:
        from ..client.app import app as client_app
    if site_policy:
        from ..client.app import simulated_site_app

        client_app = simulated_site_app(site_policy, client_app)

    client_resources = _client_resources(resources, num_sites)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        run_simulation(
            server_app=make_server_app(cfg.to_flower(), wrap_grid),
            client_app=client_app,
            num_supernodes=num_sites,
            backend_name="ray",
            backend_config={"client_resources": client_resources},
            verbose_logging=verbose,
        )
    return cfg.run_uuid
