"""The run configuration: one typed, validated view of Flower's run config.

Flower passes ``[tool.flwr.app.config]`` (plus ``--run-config`` overrides) as a flat
dict with kebab-case keys. Both apps read it through :class:`RunConfig`, so a bad
value fails at start-up with the name of the field, not deep inside a round.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .paths import name_problem

TASKS = ("classification", "segmentation")
AGGREGATIONS = ("fedavg", "krum", "multikrum", "bulyan", "fedmedian", "fedtrimmedavg")
THREATS = ("none", "backdoor", "label-flip")
HARDENINGS = ("none", "pgd-at", "trades", "fast-fgsm", "mart", "ssat")
PARTITIONINGS = ("iid", "dirichlet", "quantity")
OPTIMIZERS = ("adam", "sgd")
CLASS_WEIGHTINGS = ("balanced", "none")
NORMS = ("batch", "group", "none")
DETECTORS = ("", "mahalanobis", "kd-bu")


# Keys that configure the server and name the run: never sent to sites (db-url may hold
# credentials) and not part of what a run computes (a sweep does not hash them).
SERVER_ONLY_KEYS = ("db-url", "run-name", "run-uuid", "resume-run")


class ConfigError(ValueError):
    """A run-config value is missing or invalid; the message names the field."""


def fedaegis_home() -> Path:
    """Where runs, checkpoints and the default database live (``FEDAEGIS_HOME``)."""
    return Path(os.environ.get("FEDAEGIS_HOME", Path.home() / ".fedaegis")).expanduser()


def default_db_url() -> str:
    return os.environ.get("FEDAEGIS_DB_URL") or f"sqlite:///{fedaegis_home() / 'fedaegis.db'}"


@dataclass(frozen=True)
class RunConfig:
    """Settings of one federated run. Field ``foo_bar`` is run-config key ``foo-bar``."""

    num_server_rounds: int = 3
    task: str = "classification"
    dataset: str = "embedded:pneumoniamnist"
    in_channels: int = 1
    num_classes: int = 2
    spatial_dims: int = 2
    image_size: int = 28
    model: str = "cnn"
    norm: str = "group"
    partitioning: str = "iid"
    dirichlet_alpha: float = 0.5
    seed: int = 0
    local_epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    class_weighting: str = "balanced"
    attacks: str = ""
    epsilons: str = "1/255,2/255,4/255,8/255"
    attack_samples: int = 256
    min_cell_size: int = 10
    metric_dp: str = "none"
    metric_epsilon: float = 1.0
    metric_delta: float = 1e-5
    metric_epsilon_budget: float = 10.0
    secure_aggregation: bool = False  # evaluation replies under SecAgg+ (server/secure_evaluation.py)
    secure_aggregation_train: bool = False  # training updates too: quantised, masked FedAvg
    secure_aggregation_neighbours: int = 12  # SecAgg+ neighbours per site (all sites if fewer)
    aggregation: str = "fedavg"
    num_malicious: int = 0
    krum_select: int = 0
    trim_beta: float = 0.2
    clip_norm: float = 0.0
    noise_multiplier: float = 0.0
    threat: str = "none"
    target_class: int = 0
    poison_fraction: float = 0.1
    trigger_size: int = 3
    boost: float = 1.0
    dp_epsilon: float = 0.0
    dp_delta: float = 1e-5
    dp_max_grad_norm: float = 1.0
    prune_fraction: float = 0.0
    inversion_audit: str = ""
    inversion_images: int = 1
    inversion_iterations: int = 200
    hardening: str = "none"
    hardening_eps: float = 8 / 255
    hardening_steps: int = 3
    labelled_fraction: float = 1.0
    defence_models: str = ""  # e.g. "none,pgd-at,trades": one global member per method ("" : off)
    detector: str = ""  # "", mahalanobis or kd-bu: detector-gated routing in evaluation
    detector_fpr: float = 0.1
    router_hardened: str = "pgd-at"
    seg_model: str = "unet"
    seg_attacks: str = "pgd,dag,multiscale,asma"
    seg_attack_steps: int = 10
    seg_target: str = "shift:3"
    seg_max_volumes: int = 0
    seg_adversarial_training: bool = False
    seg_adv_eps: float = 4 / 255
    seg_adv_steps: int = 3
    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    min_sites: int = 2
    round_timeout: float = 3600.0
    db_url: str = ""
    run_name: str = ""
    run_uuid: str = ""
    num_sites: int = 0  # simulated sites (set by `fedaegis simulate`); 0: a deployment's SuperNodes
    resume_run: str = ""  # id or uuid of a stored, interrupted run to continue (see server/resume.py)
    # --- s5-d: image sizes, volumes, declared sites, model weights ---
    augment: bool = False  # random flips and small affine changes of training batches (MONAI); off: figures as before
    modality: str = ""  # simulated sites keep only DICOM files of these Modality codes, e.g. "CR,DX" ("": any)
    body_part: str = ""  # simulated sites keep only DICOM files of these BodyPartExamined codes ("": any)
    weights: str = ""  # initial global model: a torch state-dict file or a MONAI bundle folder ("": random)
    spacing: str = ""  # volumes: voxel spacing in mm all are resampled to, e.g. "1.5,1.5,2" ("": their median)

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            ("num-server-rounds", self.num_server_rounds >= 1, "must be >= 1"),
            ("task", self.task in TASKS, f"must be one of {TASKS}"),
            ("attack-samples", self.attack_samples >= 0, "must be >= 0 (0: the whole test split)"),
            ("min-cell-size", self.min_cell_size >= 0, "must be >= 0 (0: no suppression)"),
            ("aggregation", self.aggregation in AGGREGATIONS, f"must be one of {AGGREGATIONS}"),
            ("num-malicious", self.num_malicious >= 0, "must be >= 0"),
            ("krum-select", self.krum_select >= 0, "must be >= 0 (0: min-sites - num-malicious)"),
            ("trim-beta", 0 <= self.trim_beta < 0.5, "must be in [0, 0.5)"),
            ("clip-norm", self.clip_norm >= 0, "must be >= 0 (0: off)"),
            ("noise-multiplier", self.noise_multiplier >= 0 and (self.noise_multiplier == 0 or self.clip_norm > 0),
             "must be >= 0, and > 0 only with clip-norm > 0"),
            ("threat", self.threat in THREATS, f"must be one of {THREATS}"),
            ("target-class", 0 <= self.target_class < self.num_classes, "must be a class index below num-classes"),
            ("poison-fraction", 0 <= self.poison_fraction <= 1, "must be in [0, 1]"),
            ("trigger-size", 1 <= self.trigger_size <= self.image_size - 2, "must be in [1, image-size - 2]"),
            ("boost", self.boost > 0, "must be > 0"),
            ("dp-epsilon", self.dp_epsilon >= 0 and (self.dp_epsilon == 0 or self.norm != "batch"),
             "must be >= 0 (0: off); DP-SGD needs norm 'group'"),
            ("dp-delta", 0 < self.dp_delta < 1, "must be in (0, 1)"),
            ("dp-max-grad-norm", self.dp_max_grad_norm > 0, "must be > 0"),
            ("prune-fraction", 0 <= self.prune_fraction < 1, "must be in [0, 1)"),
            ("inversion-audit", self.inversion_audit in ("", "dlg", "idlg", "ig"), "must be '', dlg, idlg or ig"),
            ("inversion-images", self.inversion_images >= 1, "must be >= 1"),
            ("inversion-iterations", self.inversion_iterations >= 1, "must be >= 1"),
            ("hardening", self.hardening in HARDENINGS, f"must be one of {HARDENINGS}"),
            ("hardening-eps", 0 < self.hardening_eps <= 1, "must be in (0, 1]"),
            ("hardening-steps", self.hardening_steps >= 1, "must be >= 1"),
            ("labelled-fraction", 0 < self.labelled_fraction <= 1, "must be in (0, 1]"),
            ("labelled-fraction", self.labelled_fraction < 1 or "ssat" not in (self.hardening, *self.defence_model_names),
             "must be < 1 with ssat: the site's other training images are its unlabelled pool"),
            ("defence-models", not self.defence_models or (self.task == "classification" and self.hardening == "none"
                                                           and self.dp_epsilon == 0),
             "needs task 'classification', hardening 'none' (each member has its own) and no DP-SGD"),
            ("detector", self.detector in DETECTORS, f"must be one of {DETECTORS}"),
            ("detector", not self.detector or "none" in self.defence_model_names,
             "needs defence-models with 'none' (the standard model the detector watches)"),
            ("detector-fpr", 0 < self.detector_fpr < 1, "must be in (0, 1)"),
            ("router-hardened", not self.detector or (self.router_hardened != "none"
                                                      and self.router_hardened in self.defence_model_names),
             "must name a hardened member of defence-models"),
            ("seg-model", self.seg_model in ("unet", "segresnet"), "must be unet or segresnet"),
            ("seg-attack-steps", self.seg_attack_steps >= 1, "must be >= 1"),
            ("seg-max-volumes", self.seg_max_volumes >= 0, "must be >= 0 (0: all)"),
            ("seg-adv-eps", 0 < self.seg_adv_eps <= 1, "must be in (0, 1]"),
            ("seg-adv-steps", self.seg_adv_steps >= 1, "must be >= 1"),
            ("metric-dp", self.metric_dp in ("none", "laplace", "gaussian"), "must be none, laplace or gaussian"),
            ("metric-epsilon", self.metric_epsilon > 0, "must be > 0"),
            ("metric-delta", 0 < self.metric_delta < 1, "must be in (0, 1)"),
            ("metric-epsilon-budget", self.metric_epsilon_budget >= self.metric_epsilon, "must be >= metric-epsilon"),
            ("dataset", bool(self.dataset), "must name a dataset path or embedded:NAME"),
            ("in-channels", self.in_channels >= 1, "must be >= 1"),
            ("num-classes", self.num_classes >= 2, "must be >= 2"),
            ("spatial-dims", self.spatial_dims in (2, 3), "must be 2 or 3"),
            ("image-size", self.image_size >= 8, "must be >= 8"),
            ("norm", self.norm in NORMS, f"must be one of {NORMS}"),
            ("partitioning", self.partitioning in PARTITIONINGS, f"must be one of {PARTITIONINGS}"),
            ("dirichlet-alpha", self.dirichlet_alpha > 0, "must be > 0"),
            ("local-epochs", self.local_epochs >= 1, "must be >= 1"),
            ("batch-size", self.batch_size >= 1, "must be >= 1"),
            ("learning-rate", self.learning_rate > 0, "must be > 0"),
            ("optimizer", self.optimizer in OPTIMIZERS, f"must be one of {OPTIMIZERS}"),
            ("class-weighting", self.class_weighting in CLASS_WEIGHTINGS, f"must be one of {CLASS_WEIGHTINGS}"),
            ("fraction-train", 0 < self.fraction_train <= 1, "must be in (0, 1]"),
            ("fraction-evaluate", 0 < self.fraction_evaluate <= 1, "must be in (0, 1]"),
            ("min-sites", self.min_sites >= 1, "must be >= 1"),
            ("round-timeout", self.round_timeout > 0, "must be > 0"),
            ("num-sites", self.num_sites >= 0, "must be >= 0 (0: not a simulation)"),
            ("secure-aggregation-neighbours", self.secure_aggregation_neighbours >= 2, "must be >= 2"),
            ("spacing", _spacing_ok(self.spacing), "must be '' or 3 positive numbers in mm, e.g. \"1.5,1.5,2\""),
            ("secure-aggregation-train", not self.secure_aggregation_train or self.aggregation == "fedavg",
             f"aggregation '{self.aggregation}' needs each site's own update, which secure aggregation hides; "
             "use aggregation = \"fedavg\" or secure-aggregation-train = false"),
            ("secure-aggregation-train", not self.secure_aggregation_train or self.clip_norm == 0,
             "clip-norm clips each site's update at the server, which secure aggregation hides; "
             "bound updates at the sites (dp-epsilon) or set clip-norm = 0"),
        ]
        for key, ok, why in checks:
            if not ok:
                raise ConfigError(f"run config '{key}' = {getattr(self, _attr(key))!r}: {why}")
        # both become file names under the project home (checkpoints, sweep logs)
        for key, colon in (("run-uuid", False), ("run-name", True)):
            why = name_problem(getattr(self, _attr(key)), allow_colon=colon, allow_empty=True)
            if why:
                raise ConfigError(f"run config '{key}' = {getattr(self, _attr(key))!r}: {why}")
        self.epsilon_values  # noqa: B018 - parse now so a bad list fails at start-up
        self.attack_names  # noqa: B018
        self.defence_model_names  # noqa: B018

    @property
    def attack_names(self) -> tuple[str, ...]:
        """The attack suite run at every site each round (``attacks``, comma-separated)."""
        names = tuple(a.strip().lower() for a in self.attacks.split(",") if a.strip())
        if not names:
            return ()
        from .attacks import ATTACKS  # torch-heavy: imported only when attacks are named

        if len(set(names)) != len(names):
            raise ConfigError(f"run config 'attacks' = {self.attacks!r}: an attack is listed twice")
        unknown = [n for n in names if n not in ATTACKS]
        if unknown:
            raise ConfigError(
                f"run config 'attacks': unknown attack {unknown[0]!r}; choose from {sorted(ATTACKS)}"
            )
        return names

    @property
    def defence_model_names(self) -> tuple[str, ...]:
        """The members of a defence comparison (``defence-models``), each a hardening method or none."""
        names = tuple(m.strip().lower() for m in self.defence_models.split(",") if m.strip())
        bad = [m for m in names if m not in HARDENINGS]
        if bad:
            raise ConfigError(f"run config 'defence-models': unknown member {bad[0]!r}; choose from {HARDENINGS}")
        if len(set(names)) != len(names):
            raise ConfigError(f"run config 'defence-models' = {self.defence_models!r}: a member is listed twice")
        return names

    @property
    def epsilon_values(self) -> tuple[float, ...]:
        """``epsilons`` parsed: decimals or fractions such as ``2/255``, each in (0, 1]."""
        values = []
        for item in (e.strip() for e in self.epsilons.split(",") if e.strip()):
            try:
                num, _, den = item.partition("/")
                value = float(num) / float(den) if den else float(num)
            except (ValueError, ZeroDivisionError):
                raise ConfigError(f"run config 'epsilons': {item!r} is not a number or fraction") from None
            if not 0 < value <= 1:
                raise ConfigError(f"run config 'epsilons': {item!r} is outside (0, 1]")
            values.append(value)
        if not values:
            raise ConfigError("run config 'epsilons': needs at least one budget")
        return tuple(values)

    @classmethod
    def from_flower(cls, run_config: dict[str, Any]) -> RunConfig:
        """Build from Flower's run config; unknown keys are errors (typos must not pass)."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in run_config.items():
            attr = _attr(key)
            if attr not in known:
                raise ConfigError(
                    f"run config '{key}': unknown key; known keys are "
                    f"{sorted(_key(n) for n in known)}"
                )
            values[attr] = _coerce(key, value, known[attr].type)
        return cls(**values)

    def to_flower(self) -> dict[str, bool | int | float | str]:
        """The kebab-case dict Flower's records and ``--run-config`` use."""
        return {_key(k): v for k, v in dataclasses.asdict(self).items()}

    @property
    def resolved_db_url(self) -> str:
        return self.db_url or default_db_url()


def _spacing_ok(text: str) -> bool:
    if not text.strip():
        return True
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        return False
    return len(values) == 3 and all(v > 0 for v in values)


def _attr(key: str) -> str:
    return key.replace("-", "_")


def _key(attr: str) -> str:
    return attr.replace("_", "-")


def _coerce(key: str, value: Any, type_name: Any) -> Any:
    """Accept what TOML and ``--run-config`` produce, reject the rest with the key named."""
    kind = {"int": int, "float": float, "str": str, "bool": bool}[str(type_name)]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(
            f"run config '{key}' = {value!r}: expected {kind.__name__}, got {type(value).__name__}"
        )
    return value
