"""``fedaegis sweep CONFIG``: a grid of federated simulations, all stored in one database.

CONFIG is a TOML file with three tables::

    [sweep]              # how to run it
    name = "robustness"  # default: the file's stem; runs are named NAME:HASH
    num-sites = 2        # simulated hospitals per run
    parallel = 2         # runs at once
    cpus-per-run = 1     # CPUs of each run's own Ray instance (its sites share them)
    client-cpus = 1      # whole CPUs per simulated site inside a run
    client-gpus = 0      # GPU share per simulated site (0: the CPU; a run reserves its sites' shares)
    ray-address = ""     # "": a local Ray on 127.0.0.1; else join this cluster

    [config]             # the base run config: [tool.flwr.app.config] keys
    num-server-rounds = 3

    [grid]               # run-config keys, each with a list of values: every combination runs
    model = ["cnn", "resnet10"]
    seed = [0, 1]

Each point is keyed by a stable hash of its full run config (defaults included) and the number
of sites. A sweep is resumable: a point whose run is already ``completed`` in the database is
skipped; failed runs, and runs left ``running`` by a crashed sweep, run again.
Scheduling is in :mod:`fedaegis.orchestration.sweep_run`, the command in
:mod:`fedaegis.orchestration.sweep_cli`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..shared.run.config import SERVER_ONLY_KEYS, ConfigError, RunConfig
from ..shared.run.preflight import Names, PreflightError, check_against_data
from ..shared.run.paths import name_problem
from .preflight import preflight

# Set by the sweep for every run (num-sites from [sweep]), never by [config] or [grid].
SWEEP_KEYS = ("run-name", "run-uuid", "num-sites", "resume-run")


class SweepConfigError(ValueError):
    """The sweep file is invalid; the message names the table and field."""


@dataclass(frozen=True)
class SweepOptions:
    name: str
    num_sites: int = 2
    parallel: int = 1
    cpus_per_run: int = 1
    client_cpus: float = 1.0
    client_gpus: float = 0.0  # GPU share per simulated site, as simulate's --client-gpus
    ray_address: str = ""

    @property
    def gpus_per_run(self) -> float:
        """GPUs a point's Ray task reserves for its sites: their shares together (whole GPUs above one)."""
        total = self.num_sites * self.client_gpus
        return total if total <= 1 else float(math.ceil(total))


@dataclass(frozen=True)
class SweepPoint:
    index: int  # 1-based, in grid order
    values: dict[str, Any]  # this point's grid values
    config: dict[str, Any]  # the full run config (kebab-case), without the SERVER_ONLY_KEYS keys
    config_hash: str

    def run_name(self, sweep_name: str) -> str:
        return f"{sweep_name}:{self.config_hash}"


@dataclass(frozen=True)
class Sweep:
    options: SweepOptions
    db_url: str
    grid_keys: tuple[str, ...]
    points: tuple[SweepPoint, ...]


_OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,), "num-sites": (int,), "parallel": (int,), "cpus-per-run": (int,),
    "client-cpus": (int, float), "client-gpus": (int, float), "ray-address": (str,),
}


def load_sweep(path: Path, db_url: str | None = None) -> Sweep:
    """Read and validate a sweep file; ``db_url`` (e.g. ``--db-url``) beats the file's ``db-url``."""
    try:
        doc = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SweepConfigError(f"sweep config {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise SweepConfigError(f"sweep config {str(path)!r} is not valid TOML: {exc}") from None
    return build_sweep(doc, default_name=Path(path).stem, db_url=db_url)


def build_sweep(doc: dict[str, Any], default_name: str = "sweep", db_url: str | None = None) -> Sweep:
    """Validate a parsed sweep file and expand its grid: every error names its table and field."""
    from ..shared.run.config import default_db_url

    unknown = sorted(set(doc) - {"sweep", "config", "grid"})
    if unknown:
        raise SweepConfigError(f"sweep config: unknown table or key {unknown[0]!r}; use [sweep], [config] and [grid]")
    options = _options(_table(doc, "sweep"), default_name)
    base = _table(doc, "config")
    grid = _table(doc, "grid")
    known = set(RunConfig().to_flower())
    for key in base:
        if key not in known:
            raise SweepConfigError(f"[config] '{key}': unknown run-config key")
        if key in SWEEP_KEYS:
            raise SweepConfigError(f"[config] '{key}': set by the sweep for every run (see [sweep]); remove it")
    if not grid:
        raise SweepConfigError("[grid]: needs at least one run-config key with a list of values")
    for key, values in grid.items():
        if key not in known:
            raise SweepConfigError(f"[grid] '{key}': unknown run-config key")
        if key in (*SWEEP_KEYS, "db-url"):
            raise SweepConfigError(f"[grid] '{key}': cannot vary within a sweep")
        if key in base:
            raise SweepConfigError(f"[grid] '{key}': also set in [config]; set it in one place")
        if not isinstance(values, list) or not values:
            raise SweepConfigError(f"[grid] '{key}': needs a non-empty list of values, got {values!r}")
        for i, value in enumerate(values):
            if isinstance(value, list | dict):
                raise SweepConfigError(f"[grid] '{key}': value {value!r} is not a single value")
            if value in values[:i]:
                raise SweepConfigError(f"[grid] '{key}': value {value!r} is listed twice")
    db = db_url or str(base.pop("db-url", "") or "") or default_db_url()
    points = tuple(
        _point(i, dict(zip(grid, combo)), base, options)
        for i, combo in enumerate(itertools.product(*grid.values()), start=1)
    )
    return Sweep(options=options, db_url=db, grid_keys=tuple(grid), points=points)


def _table(doc: dict[str, Any], name: str) -> dict[str, Any]:
    table = doc.get(name, {})
    if not isinstance(table, dict):
        raise SweepConfigError(f"sweep config: '{name}' must be a table, [{name}]")
    return dict(table)


def _options(table: dict[str, Any], default_name: str) -> SweepOptions:
    for key, value in table.items():
        if key not in _OPTION_TYPES:
            raise SweepConfigError(f"[sweep] '{key}': unknown option; known are {sorted(_OPTION_TYPES)}")
        if not isinstance(value, _OPTION_TYPES[key]) or isinstance(value, bool):
            raise SweepConfigError(f"[sweep] '{key}' = {value!r}: expected {_OPTION_TYPES[key][0].__name__}")
    opts = SweepOptions(**{k.replace("-", "_"): v for k, v in {"name": default_name, **table}.items()})
    checks = [
        ("name", name_problem(opts.name) is None, name_problem(opts.name) or ""),
        ("num-sites", opts.num_sites >= 1, "must be >= 1"),
        ("parallel", opts.parallel >= 1, "must be >= 1"),
        ("cpus-per-run", opts.cpus_per_run >= 1, "must be >= 1"),
        ("client-cpus", 0 < opts.client_cpus <= opts.cpus_per_run and opts.client_cpus == int(opts.client_cpus),
         "must be a whole number in [1, cpus-per-run] (Flower's Simulation Runtime reserves whole CPUs)"),
    ]
    for key, ok, why in checks:
        if not ok:
            raise SweepConfigError(f"[sweep] '{key}' = {getattr(opts, key.replace('-', '_'))!r}: {why}")
    from .simulation import SimulationResources, check_client_gpus

    try:  # the same rule as simulate's --client-gpus; a cluster's GPUs are Ray's to find
        check_client_gpus(SimulationResources(ray_address=opts.ray_address or None, client_gpus=opts.client_gpus),
                          option="[sweep] 'client-gpus' =")
    except ValueError as exc:
        raise SweepConfigError(str(exc)) from None
    return opts


_DATA_CONFIGS: dict[tuple[str, int | None], dict[str, int]] = {}


def _point(index: int, values: dict[str, Any], base: dict[str, Any], opts: SweepOptions) -> SweepPoint:
    """One grid point as a complete, validated run config and its hash."""
    where = f"grid point {index} ({describe(values)})"
    overrides = {**base, **values}
    overrides.setdefault("min-sites", min(2, opts.num_sites))
    if "num-sites" in RunConfig().to_flower():
        overrides["num-sites"] = opts.num_sites
    try:
        if overrides.get("task", "classification") == "classification":
            for key, value in _data_config(str(overrides.get("dataset", RunConfig.dataset)),
                                           overrides.get("num-classes")).items():
                overrides.setdefault(key, value)
        cfg = RunConfig.from_flower(overrides)
    except (ConfigError, PreflightError) as exc:
        raise SweepConfigError(f"{where}: {exc}") from None
    except (OSError, ValueError) as exc:  # unreadable or invalid dataset
        raise SweepConfigError(f"{where}: run config 'dataset' = {overrides.get('dataset')!r}: {exc}") from None
    if cfg.min_sites > opts.num_sites:
        raise SweepConfigError(f"{where}: run config 'min-sites' = {cfg.min_sites} exceeds [sweep] num-sites")
    try:  # each point's sites, data and model, as simulate checks them
        if cfg.task == "classification":
            check_against_data(cfg, _data_config(cfg.dataset, overrides.get("num-classes")))
        preflight(cfg, opts.num_sites, Names({"num-sites": "[sweep] num-sites"}), database=False)
    except PreflightError as exc:
        raise SweepConfigError(f"{where}: {exc}") from None
    full = {k: v for k, v in cfg.to_flower().items() if k not in SERVER_ONLY_KEYS}
    blob = json.dumps({"num-sites": opts.num_sites, "config": full}, sort_keys=True)
    return SweepPoint(index, values, full, hashlib.sha256(blob.encode()).hexdigest()[:16])


def _data_config(dataset: str, num_classes: int | None) -> dict[str, int]:
    """The dataset's shape keys, read once per dataset and class count (like ``fedaegis simulate``)."""
    from .datainfo import data_config

    if (dataset, num_classes) not in _DATA_CONFIGS:
        _DATA_CONFIGS[(dataset, num_classes)] = data_config(dataset, num_classes)
    return _DATA_CONFIGS[(dataset, num_classes)]


def describe(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in values.items())
