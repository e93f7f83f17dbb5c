"""Run a federation of simulated hospitals on Ray, in this process, through Flower.

Ray is started here (bound to 127.0.0.1, or joined by address to an existing
cluster) before Flower's simulation engine sees it, so the engine reuses it.
"""

from __future__ import annotations

import logging
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
    """How Ray runs the sites: each simulated site is one Ray actor of ``client_cpus``."""

    ray_address: str | None = None  # None: a private local Ray instance
    num_cpus: int | None = None  # local Ray only; default: all cores
    client_cpus: float = 1.0
    client_memory_mb: int = 0  # 0: no memory reservation per site


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
            num_cpus=resources.num_cpus or os.cpu_count(),
            num_gpus=0,
            _node_ip_address="127.0.0.1",
            _temp_dir=os.environ["RAY_TMPDIR"],
            **common,
        )


def simulate(
    overrides: dict[str, Any],
    num_sites: int,
    resources: SimulationResources = SimulationResources(),
    *,
    verbose: bool = False,
    wrap_grid: Callable[[Grid], Grid] | None = None,
    client_app: ClientApp | None = None,
) -> str:
    """Run a simulated federation; returns the run's uuid (its key in the database).

    ``overrides`` are run-config keys (kebab-case) on top of :class:`RunConfig` defaults.
    ``client_app`` replaces fedaegis' own ClientApp at every site (``fedaegis audit`` uses it
    to check another site implementation against the protocol).
    """
    if num_sites < 1:
        raise ValueError(f"num_sites: need at least one site, got {num_sites}")
    overrides = {**overrides, "run-uuid": overrides.get("run-uuid") or uuidlib.uuid4().hex}
    cfg = RunConfig.from_flower(overrides)  # fail here, with the field named, not in Ray
    if cfg.min_sites > num_sites:
        raise ValueError(f"run config 'min-sites' = {cfg.min_sites} exceeds the {num_sites} sites")
    _quiet_environment()
    _start_ray(resources)

    from flwr.simulation import run_simulation

    from ..server.app import make_server_app

    if client_app is None:
        from ..client.app import app as client_app

    client_resources: dict[str, Any] = {"num_cpus": resources.client_cpus, "num_gpus": 0.0}
    if resources.client_memory_mb:
        client_resources["memory"] = resources.client_memory_mb * 1024 * 1024
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
