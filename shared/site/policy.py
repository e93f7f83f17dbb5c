"""The hospital's own privacy policy: what the site lets leave, whatever the coordinator asks.

The run config is a request. Each site reads its policy from a TOML file it owns (the
SuperNode's node config ``policy=/path/site-policy.toml``, else ``$FEDAEGIS_SITE_POLICY`` in
the SuperNode's environment, else the safe built-in defaults below) and, before it touches
any data, checks the request against it (:func:`check_request`). A request that exceeds the
policy is refused with one fixed error code and the name of the policy field; nothing that
depends on the site's data goes into a refusal.

Example (every field optional; these are the defaults)::

    [release]
    min-cell-size = 10          # a floor the request cannot lower
    min-eval-samples = 32       # fewest samples in any evaluation group (attacks, members, ...)
    min-train-samples = 64      # fewest samples behind any training update
    min-batch-size = 8
    eval-sizes = [32, 64, 128, 256, 512]   # the only attack-sample sizes (plus the whole set);
                                           # [] allows any size (and so differencing)
    max-histogram-bins = 20
    max-inversion-iterations = 1000

    [allow]
    tasks = ["classification", "segmentation"]
    attacks = ["*"]
    inversion-audits = ["dlg", "idlg", "ig"]
    hardening = ["*"]
    detectors = ["*"]
    transfer = true             # transfer attacks (run config 'transfer'): PGD crafted on the
                                # site's own model of the round, scored on the global one
    models = ["*"]              # registered models; your own ("package.module:factory") or a MONAI
                                # network ("monai:DenseNet121") only by its exact name here (never
                                # by "*"), except at simulated sites
    landscape = true            # loss-landscape sums (clipped loss per grid cell, run config 'landscape')
    simulated-threats = true    # poisoning/backdoor/boost: only ever in simulation, by partition id

    [dp]
    required = true             # released counts always carry DP noise, asked for or not
    mechanism = "laplace"       # OpenDP discrete Laplace ("gaussian": discrete Gaussian)
    max-epsilon = 1.0           # per release
    lifetime-epsilon = 300.0    # the site's total, across every run (the ledger)
    delta = 1e-6                # per release, Gaussian only

    [updates]
    mode = "clear"              # "clear", "dp-sgd" or "secure-aggregation"
    max-dp-sgd-epsilon = 8.0    # DP-SGD may not be asked for above this

    [site]
    state-dir = ""              # ledger and secret; default $FEDAEGIS_HOME/site
    visual-report = false       # after the final round, a page for the site's own staff in
                                # <state-dir>/reports (client/visual_report.py); never sent
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..run.config import TASKS, RunConfig, fedaegis_home

POLICY_ENV = "FEDAEGIS_SITE_POLICY"
POLICY_NODE_KEY = "policy"
UPDATE_MODES = ("clear", "dp-sgd", "secure-aggregation")
DP_MECHANISMS = ("laplace", "gaussian")


class PolicyError(ValueError):
    """The policy file is unreadable or a field is invalid; the message names the field."""


class Refusal(Exception):
    """A request the site's policy does not allow; ``field`` is the policy field it exceeds."""

    def __init__(self, field: str) -> None:
        super().__init__(field)
        self.field = field


@dataclass(frozen=True)
class SitePolicy:
    """A site's policy; attribute ``section_name`` is TOML ``[section] name`` (kebab-case)."""

    release_min_cell_size: int = 10
    release_min_eval_samples: int = 32
    release_min_train_samples: int = 64
    release_min_batch_size: int = 8
    release_eval_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    release_max_histogram_bins: int = 20
    release_max_inversion_iterations: int = 1000
    allow_tasks: tuple[str, ...] = TASKS
    allow_attacks: tuple[str, ...] = ("*",)
    allow_inversion_audits: tuple[str, ...] = ("dlg", "idlg", "ig")
    allow_hardening: tuple[str, ...] = ("*",)
    allow_detectors: tuple[str, ...] = ("*",)
    allow_models: tuple[str, ...] = ("*",)
    allow_transfer: bool = True
    allow_landscape: bool = True
    allow_simulated_threats: bool = True
    dp_required: bool = True
    dp_mechanism: str = "laplace"
    dp_max_epsilon: float = 1.0
    dp_lifetime_epsilon: float = 300.0
    dp_delta: float = 1e-6
    updates_mode: str = "clear"
    updates_max_dp_sgd_epsilon: float = 8.0
    site_state_dir: str = ""
    site_visual_report: bool = False
    source: str = field(default="built-in defaults", compare=False)

    def __post_init__(self) -> None:
        checks = [
            ("release.min-cell-size", self.release_min_cell_size >= 0),
            ("release.min-eval-samples", self.release_min_eval_samples >= 1),
            ("release.min-train-samples", self.release_min_train_samples >= 1),
            ("release.min-batch-size", self.release_min_batch_size >= 1),
            ("release.eval-sizes", all(s >= 1 for s in self.release_eval_sizes)),
            ("release.max-histogram-bins", self.release_max_histogram_bins >= 2),
            ("release.max-inversion-iterations", self.release_max_inversion_iterations >= 1),
            ("dp.mechanism", self.dp_mechanism in DP_MECHANISMS),
            ("dp.max-epsilon", self.dp_max_epsilon > 0),
            ("dp.lifetime-epsilon", self.dp_lifetime_epsilon >= self.dp_max_epsilon),
            ("dp.delta", 0 < self.dp_delta < 1),
            ("updates.mode", self.updates_mode in UPDATE_MODES),
            ("updates.max-dp-sgd-epsilon", self.updates_max_dp_sgd_epsilon > 0),
        ]
        for name, ok in checks:
            if not ok:
                raise PolicyError(f"site policy {self.source}: '{name}' = {_value(self, name)!r} is invalid")

    def allows(self, kind: str, name: str) -> bool:
        allowed: tuple[str, ...] = getattr(self, f"allow_{kind.replace('-', '_')}")
        return "*" in allowed or name in allowed

    @property
    def state_dir(self) -> Path:
        return Path(self.site_state_dir).expanduser() if self.site_state_dir else fedaegis_home() / "site"

    @classmethod
    def from_toml(cls, path: str | Path) -> SitePolicy:
        """Read a policy file; an unknown section or key, or a wrong type, is named."""
        path = Path(path).expanduser()
        try:
            text = path.read_text()
        except OSError as exc:
            raise PolicyError(f"site policy {path}: cannot be read ({type(exc).__name__})") from None
        return _parsed(text, str(path))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "mapping") -> SitePolicy:
        known = {f.name: f for f in fields(cls) if f.name != "source"}
        values: dict[str, Any] = {}
        for section, table in data.items():
            if not isinstance(table, Mapping):
                raise PolicyError(f"site policy {source}: '{section}' must be a table")
            for key, value in table.items():
                attr = f"{section}_{key}".replace("-", "_")
                if attr not in known:
                    raise PolicyError(f"site policy {source}: unknown field '{section}.{key}'")
                values[attr] = _coerce(f"{section}.{key}", value, str(known[attr].type), source)
        return cls(**values, source=source)


@lru_cache(maxsize=64)
def _parsed(text: str, source: str) -> SitePolicy:
    """A policy file's text, parsed once (read on every message; the text, not its mtime, is the key)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"site policy {source}: cannot be read ({type(exc).__name__})") from None
    return SitePolicy.from_mapping(data, source=source)


def _value(policy: SitePolicy, name: str) -> Any:
    return getattr(policy, name.replace(".", "_").replace("-", "_"))


def _coerce(name: str, value: Any, type_name: str, source: str) -> Any:
    def bad() -> PolicyError:
        return PolicyError(f"site policy {source}: '{name}' = {value!r} has the wrong type ({type_name})")

    if type_name.startswith("tuple"):
        if not isinstance(value, list):
            raise bad()
        item = int if "int" in type_name else str
        if not all(isinstance(v, item) and not isinstance(v, bool) for v in value):
            raise bad()
        return tuple(value)
    if type_name == "bool":
        if not isinstance(value, bool):
            raise bad()
        return value
    if type_name == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if type_name == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if type_name == "str" and isinstance(value, str):
        return value
    raise bad()


def site_policy(node_config: Mapping[str, object]) -> SitePolicy:
    """The policy this site runs under: its node config's file, its environment's, or the defaults."""
    path = node_config.get(POLICY_NODE_KEY) or os.environ.get(POLICY_ENV)
    return SitePolicy.from_toml(str(path)) if path else SitePolicy()


def is_simulated(node_config: Mapping[str, object]) -> bool:
    """A simulated site has a partition of the run's dataset; a real site has its own data."""
    return "partition-id" in node_config and not node_config.get("data-path")


def eval_size(policy: SitePolicy, requested: int, available: int) -> int:
    """The evaluation size a site uses for a request of ``requested`` samples (0: all).

    Only the policy's fixed sizes (and the whole set) are ever used: the largest fixed
    size at or below the request, so nearby requests select the same set.
    """
    if requested == 0 or requested >= available:
        return available
    if not policy.release_eval_sizes:
        return requested
    fitting = [s for s in policy.release_eval_sizes if s <= requested]
    if not fitting:
        raise Refusal("release.eval-sizes")
    return max(fitting)


def check_request(
    cfg: RunConfig, policy: SitePolicy, *, is_train: bool, node_config: Mapping[str, object]
) -> None:
    """Raise :class:`Refusal` naming the policy field the request exceeds (checked before any data)."""
    simulated = is_simulated(node_config)
    if not policy.allows("tasks", cfg.task):
        raise Refusal("allow.tasks")
    if cfg.min_cell_size < policy.release_min_cell_size:
        raise Refusal("release.min-cell-size")
    for name in cfg.attack_names:
        if not policy.allows("attacks", name):
            raise Refusal("allow.attacks")
    if cfg.transfer and not policy.allow_transfer:
        raise Refusal("allow.transfer")
    if cfg.landscape and not policy.allow_landscape:
        raise Refusal("allow.landscape")
    if cfg.attack_names or cfg.defence_models or cfg.transfer or cfg.landscape:
        if 0 < cfg.attack_samples < policy.release_min_eval_samples:
            raise Refusal("release.min-eval-samples")
        if policy.release_eval_sizes and 0 < cfg.attack_samples < min(policy.release_eval_sizes):
            raise Refusal("release.eval-sizes")
    for name in (cfg.hardening, *cfg.defence_model_names):
        if name != "none" and not policy.allows("hardening", name):
            raise Refusal("allow.hardening")
    if cfg.detector:
        from ..detection import DEFAULT_BINS

        if not policy.allows("detectors", cfg.detector):
            raise Refusal("allow.detectors")
        if DEFAULT_BINS[cfg.detector].bins > policy.release_max_histogram_bins:
            raise Refusal("release.max-histogram-bins")
    if ":" in cfg.model:  # code to import, or a MONAI network to build (monai:<Name>): only what the site lists
        if not simulated and cfg.model not in policy.allow_models:
            raise Refusal("allow.models")
    elif not policy.allows("models", cfg.model):
        raise Refusal("allow.models")
    if cfg.threat != "none" or cfg.boost != 1:
        if not simulated or not policy.allow_simulated_threats:  # never at a real site
            raise Refusal("allow.simulated-threats")
    if cfg.metric_dp != "none" and cfg.metric_epsilon > policy.dp_max_epsilon:
        raise Refusal("dp.max-epsilon")
    if is_train:
        if cfg.batch_size < policy.release_min_batch_size:
            raise Refusal("release.min-batch-size")
        if cfg.dp_epsilon > policy.updates_max_dp_sgd_epsilon:
            raise Refusal("updates.max-dp-sgd-epsilon")
        if policy.updates_mode == "dp-sgd" and cfg.dp_epsilon <= 0:
            raise Refusal("updates.mode")
        if policy.updates_mode == "secure-aggregation" and not cfg.secure_aggregation_train:
            raise Refusal("updates.mode")
        if cfg.inversion_audit:
            if not policy.allows("inversion-audits", cfg.inversion_audit):
                raise Refusal("allow.inversion-audits")
            # the audit's PSNR/SSIM describe its images only: they are a group of their own
            if cfg.inversion_images < max(policy.release_min_cell_size, 1):
                raise Refusal("release.min-cell-size")
            if cfg.inversion_iterations > policy.release_max_inversion_iterations:
                raise Refusal("release.max-inversion-iterations")


def check_train_size(policy: SitePolicy, samples: int) -> None:
    """A training update computed on fewer than ``min-train-samples`` samples never leaves."""
    if samples < policy.release_min_train_samples:
        raise Refusal("release.min-train-samples")
