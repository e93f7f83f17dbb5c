"""The run configuration: one typed, validated view of Flower's run config, in sections.

Flower passes ``[tool.flwr.app.config]`` (plus ``--run-config`` overrides) as one flat dict.
Each concern (data, model, training, attacks, hardening, ...) is a small frozen dataclass
here, a :class:`Section` with its own checks; :class:`RunConfig` inherits every section, so
each setting is defined once and stays readable flat (``cfg.local_epochs``) as well as by
section (``cfg.training.local_epochs``). One code path validates it (:meth:`RunConfig.checks`),
so a bad value fails at start-up with the key named, never deep inside a round.

Keys on the wire: field ``foo_bar`` is key ``foo-bar``; a method's own parameters have
dotted keys (``attack.pgd.steps``, ``hardening.trades.beta``; see :func:`method_param`).
Choice lists come from the registries (attacks, hardening methods, detectors, aggregation
rules), imported only when a value needs checking. pyproject's ``[tool.flwr.app.config]`` is
generated from here (:func:`pyproject_table`; ``python -m fedaegis.shared.run.config``).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from .aggregations import AGGREGATIONS, min_sites
from .paths import name_problem

TASKS = ("classification", "segmentation")
THREATS = ("none", "backdoor", "label-flip")
AMP_MODES = ("none", "bf16", "fp16")  # mixed precision of local training (shared/training/device.py)
OPTIMIZERS = ("adam", "sgd")
CLASS_WEIGHTINGS = ("balanced", "none")
NORMS = ("batch", "group", "none")
METRIC_DP = ("none", "laplace", "gaussian")
INVERSION_AUDITS = ("", "dlg", "idlg", "ig")
SEG_MODELS = ("unet", "segresnet")
MAX_LANDSCAPE_POINTS = 11  # a loss landscape's grid points per axis (cost and reply size grow as its square)

# Keys that configure the server and name the run: never sent to sites (db-url may hold
# credentials) and not part of what a run computes (a sweep does not hash them).
SERVER_ONLY_KEYS = ("db-url", "run-name", "run-uuid", "resume-run")

Check = tuple[str, bool, str]  # (key, ok, why it must hold)


class ConfigError(ValueError):
    """A run-config value is missing or invalid; the message names the key."""


def fedaegis_home() -> Path:
    """Where runs, checkpoints and the default database live (``FEDAEGIS_HOME``)."""
    return Path(os.environ.get("FEDAEGIS_HOME", Path.home() / ".fedaegis")).expanduser()


def default_db_url() -> str:
    return os.environ.get("FEDAEGIS_DB_URL") or f"sqlite:///{fedaegis_home() / 'fedaegis.db'}"


# -- the registries' names (torch-heavy imports: only when a value needs checking) --------------
def hardening_names() -> tuple[str, ...]:
    """``none`` and every hardening method of :data:`fedaegis.shared.hardening.HARDENINGS`."""
    from ..hardening import HARDENINGS

    return ("none", *HARDENINGS)


def detector_names() -> tuple[str, ...]:
    """``""`` (off) and every detector of :data:`fedaegis.shared.detection.DETECTORS`."""
    from ..detection import DETECTORS

    return ("", *DETECTORS)


def __getattr__(name: str) -> tuple[str, ...]:  # the former copies of the registries' lists
    lists: dict[str, Callable[[], tuple[str, ...]]] = {
        "HARDENINGS": hardening_names, "DETECTORS": detector_names, "AGGREGATIONS": lambda: AGGREGATIONS}
    if name in lists:
        return lists[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- fields -------------------------------------------------------------------------------------
def method_param(registry: str, method: str, param: str, default: Any, *, arg: str | None = None) -> Any:
    """A parameter of one attack or hardening method: run-config key ``<registry>.<method>.<param>``.

    ``arg`` is the method's constructor keyword (default ``param`` with ``-`` as ``_``); the
    default must equal the constructor's (``tests/test_config.py`` checks it against the registry).
    """
    arg = arg or param.replace("-", "_")
    return field(default=default, metadata={"key": f"{registry}.{method}.{param}", "method": method, "arg": arg})


def key_of(f: dataclasses.Field) -> str:
    """The run-config key of a field: its dotted key, or ``foo-bar`` for ``foo_bar``."""
    return f.metadata.get("key") or f.name.replace("_", "-")


def _raise_first(obj: object, checks: Iterator[Check]) -> None:
    for key, ok, why in checks:
        if not ok:
            attr = ATTRS.get(key, key.replace("-", "_"))
            raise ConfigError(f"run config '{key}' = {getattr(obj, attr, None)!r}: {why}")


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> Check:
    return (key, value in choices, f"must be one of {choices}")


def _names(key: str, text: str, choices: Callable[[], tuple[str, ...] | Mapping[str, Any]]) -> tuple[str, ...]:
    """A comma-separated list of registry names: lower-cased, each known, none twice."""
    names = tuple(n.strip().lower() for n in text.split(",") if n.strip())
    if not names:
        return ()
    known = choices()
    bad = [n for n in names if n not in known]
    if bad:
        raise ConfigError(f"run config '{key}': unknown name {bad[0]!r}; choose from {sorted(known)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"run config '{key}' = {text!r}: a name is listed twice")
    return names


# -- sections -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Section:
    """A group of settings of one concern, with the checks of its own values.

    A section's :meth:`checks` may read only its own fields; checks across sections are
    :meth:`RunConfig.checks`. Built alone (``TrainingSection(local_epochs=0)``) it checks itself.
    """

    view: ClassVar[str] = ""  # its name on a RunConfig: cfg.<view>

    def checks(self) -> Iterator[Check]:
        return iter(())

    def __post_init__(self) -> None:
        _raise_first(self, type(self).checks(self))

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(key_of(f) for f in fields(cls))


@dataclass(frozen=True)
class DataShape:
    """The shape of the federation's data: every consumer reads this one value."""

    channels: int
    spatial_dims: int
    size: int
    classes: int

    @property
    def image_size(self) -> tuple[int, ...]:
        """The (H, W) or (D, H, W) each image is brought to."""
        return (self.size,) * self.spatial_dims


@dataclass(frozen=True)
class RunSection(Section):
    """What runs, how long, and where it is recorded (the last four keys stay at the server)."""

    num_server_rounds: int = 3
    task: str = "classification"
    seed: int = 0
    num_sites: int = 0  # simulated sites (set by `fedaegis simulate`); 0: a deployment's SuperNodes
    db_url: str = ""
    run_name: str = ""
    run_uuid: str = ""
    resume_run: str = ""  # id or uuid of a stored, interrupted run to continue (see server/resume.py)

    def checks(self) -> Iterator[Check]:
        yield "num-server-rounds", self.num_server_rounds >= 1, "must be >= 1"
        yield _choice("task", self.task, TASKS)
        yield "num-sites", self.num_sites >= 0, "must be >= 0 (0: not a simulation)"
        # both become file names under the project home (checkpoints, sweep logs)
        for key, value, colon in (("run-uuid", self.run_uuid, False), ("run-name", self.run_name, True)):
            why = name_problem(value, allow_colon=colon, allow_empty=True)
            yield key, why is None, why or ""

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


@dataclass(frozen=True)
class DataSection(Section):
    """The dataset, its shape (one value: cfg.shape) and how simulated sites split it."""

    dataset: str = "embedded:pneumoniamnist"
    in_channels: int = 1
    num_classes: int = 2
    spatial_dims: int = 2
    image_size: int = 28
    partitioning: str = "iid"
    dirichlet_alpha: float = 0.5
    modality: str = ""  # simulated sites keep only DICOM files of these Modality codes, e.g. "CR,DX" ("": any)
    body_part: str = ""  # simulated sites keep only DICOM files of these BodyPartExamined codes ("": any)
    spacing: str = ""  # volumes: voxel spacing in mm all are resampled to, e.g. "1.5,1.5,2" ("": their median)

    def checks(self) -> Iterator[Check]:
        yield "dataset", bool(self.dataset), "must name a dataset path or embedded:NAME"
        yield "in-channels", self.in_channels >= 1, "must be >= 1"
        yield "num-classes", self.num_classes >= 2, "must be >= 2"
        yield "spatial-dims", self.spatial_dims in (2, 3), "must be 2 or 3"
        yield "image-size", self.image_size >= 8, "must be >= 8"
        if self.partitioning != "iid":  # the partitioner's own list (imported only when needed)
            from ..data.partition import SCHEMES

            yield _choice("partitioning", self.partitioning, SCHEMES)
        yield "dirichlet-alpha", self.dirichlet_alpha > 0, "must be > 0"
        yield "spacing", _spacing_ok(self.spacing), "must be '' or 3 positive numbers in mm, e.g. \"1.5,1.5,2\""

    @property
    def shape(self) -> DataShape:
        return DataShape(self.in_channels, self.spatial_dims, self.image_size, self.num_classes)


@dataclass(frozen=True)
class ModelSection(Section):
    """The classifier (a segmentation run's model is ``seg-model``)."""

    model: str = "cnn"
    norm: str = "group"
    weights: str = ""  # initial global model: a torch state-dict file or a MONAI bundle folder ("": random)
    model_args: str = ""  # model "monai:<Name>": its arguments as a JSON object, plain values only ("": none)

    def checks(self) -> Iterator[Check]:
        yield _choice("norm", self.norm, NORMS)
        if self.model_args:  # the restricted reading every site applies (shared/models/bundle.py)
            from ..models.bundle import args_problem

            problem = args_problem(self.model, self.model_args)
            yield "model-args", problem is None, problem or ""


@dataclass(frozen=True)
class TrainingSection(Section):
    """Each site's local training in a round."""

    local_epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    class_weighting: str = "balanced"
    amp: str = "none"  # mixed precision of local training: none, bf16, or fp16 (CUDA sites only)
    augment: bool = False  # random flips and small affine changes of training batches (MONAI); off: figures as before

    def checks(self) -> Iterator[Check]:
        yield "local-epochs", self.local_epochs >= 1, "must be >= 1"
        yield "batch-size", self.batch_size >= 1, "must be >= 1"
        yield "learning-rate", self.learning_rate > 0, "must be > 0"
        yield _choice("optimizer", self.optimizer, OPTIMIZERS)
        yield _choice("class-weighting", self.class_weighting, CLASS_WEIGHTINGS)
        yield _choice("amp", self.amp, AMP_MODES)


def _attacks() -> Mapping[str, Any]:
    from ..attacks import ATTACKS

    return ATTACKS


def _epsilons(text: str) -> tuple[float, ...]:
    values = []
    for item in (e.strip() for e in text.split(",") if e.strip()):
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


@dataclass(frozen=True)
class AttackSection(Section):
    """The attack suite every site runs each evaluation, and each attack's own parameters."""

    attacks: str = ""
    epsilons: str = "1/255,2/255,4/255,8/255"
    attack_samples: int = 256
    attack_rounds: str = "final"  # rounds whose evaluation runs ``attacks``: final, all or every:K (+ the final)
    # in those rounds, PGD (attack.pgd.steps) crafted on each site's own model of the round (the one it sent)
    # scored on the global model and on itself, or the defence-models members against each other: counts
    transfer: bool = False
    landscape: bool = False  # each site's loss landscape (clipped loss sums per grid cell) in those rounds
    landscape_points: int = 5  # grid points per axis, 0 .. max(epsilons)
    attack_pgd_steps: int = method_param("attack", "pgd", "steps", 10)
    attack_pgd_restarts: int = method_param("attack", "pgd", "restarts", 1)
    attack_bim_steps: int = method_param("attack", "bim", "steps", 10)
    attack_mifgsm_steps: int = method_param("attack", "mifgsm", "steps", 10)
    attack_mifgsm_decay: float = method_param("attack", "mifgsm", "decay", 1.0)
    attack_cw_steps: int = method_param("attack", "cw", "steps", 100)
    attack_cw_binary_steps: int = method_param("attack", "cw", "binary-steps", 5)
    attack_deepfool_steps: int = method_param("attack", "deepfool", "steps", 50)
    attack_apgd_steps: int = method_param("attack", "apgd", "steps", 100)
    attack_apgd_restarts: int = method_param("attack", "apgd", "restarts", 1)
    attack_apgdt_steps: int = method_param("attack", "apgdt", "steps", 100)
    attack_apgdt_restarts: int = method_param("attack", "apgdt", "restarts", 1)
    attack_fab_steps: int = method_param("attack", "fab", "steps", 100)
    attack_fab_restarts: int = method_param("attack", "fab", "restarts", 1)
    attack_fmn_steps: int = method_param("attack", "fmn", "steps", 100)
    attack_square_queries: int = method_param("attack", "square", "queries", 5000, arg="n_queries")
    attack_autoattack_apgd_steps: int = method_param("attack", "autoattack", "apgd-steps", 100)
    attack_autoattack_fab_steps: int = method_param("attack", "autoattack", "fab-steps", 100)
    attack_autoattack_square_queries: int = method_param("attack", "autoattack", "square-queries", 5000)
    attack_autoattack_restarts: int = method_param("attack", "autoattack", "restarts", 1)

    def checks(self) -> Iterator[Check]:
        yield "attack-samples", self.attack_samples >= 0, "must be >= 0 (0: the whole test split)"
        yield "landscape-points", 2 <= self.landscape_points <= MAX_LANDSCAPE_POINTS, \
            f"must be in [2, {MAX_LANDSCAPE_POINTS}] (a site evaluates points^2 perturbed copies of each image)"
        self.epsilon_values  # noqa: B018 - parsed now so a bad list fails at start-up
        self.attack_names  # noqa: B018
        self.attack_round_period  # noqa: B018
        for f in fields(AttackSection):
            if "method" in f.metadata:  # steps, restarts and queries: at least one
                value = getattr(self, f.name)
                yield key_of(f), value > 0, "must be > 0"

    @property
    def attack_names(self) -> tuple[str, ...]:
        """The attack suite run at every site each round (``attacks``, comma-separated)."""
        return _names("attacks", self.attacks, _attacks)

    @property
    def epsilon_values(self) -> tuple[float, ...]:
        """``epsilons`` parsed: decimals or fractions such as ``2/255``, each in (0, 1]."""
        return _epsilons(self.epsilons)

    @property
    def landscape_eps(self) -> float:
        """The loss landscape's extent on both axes: the largest of ``epsilons`` (8/255 by default)."""
        return max(self.epsilon_values)

    @property
    def attack_round_period(self) -> int:
        """``attack-rounds`` as a period: 1 (all), K (every:K) or 0 (the final round only)."""
        rule = self.attack_rounds.strip().lower()
        if rule in ("final", "all"):
            return 0 if rule == "final" else 1
        head, _, k = rule.partition(":")
        if head == "every" and k.strip().isdigit() and int(k) >= 1:
            return int(k)
        raise ConfigError(f"run config 'attack-rounds' = {self.attack_rounds!r}: must be final, all or every:K "
                          "(K >= 1)")

    def attack_params(self, name: str) -> dict[str, Any]:
        """Attack ``name``'s constructor keywords set by ``attack.<name>.*`` keys (its defaults otherwise)."""
        return {f.metadata["arg"]: getattr(self, f.name) for f in fields(AttackSection)
                if f.metadata.get("method") == name}

    @property
    def attack_suite(self) -> list[str | dict[str, Any]]:
        """The suite for :func:`fedaegis.shared.attacks.evaluate_attacks`: each attack with its parameters."""
        return [{"name": n, **p} if (p := self.attack_params(n)) else n for n in self.attack_names]


@dataclass(frozen=True)
class HardeningSection(Section):
    """Adversarial training at the sites, or a comparison of one global model per method."""

    hardening: str = "none"
    hardening_eps: float = 8 / 255
    hardening_steps: int = 3
    labelled_fraction: float = 1.0
    defence_models: str = ""  # e.g. "none,pgd-at,trades": one global member per method ("" : off)
    hardening_trades_beta: float = method_param("hardening", "trades", "beta", 6.0)
    hardening_mart_beta: float = method_param("hardening", "mart", "beta", 6.0)
    hardening_ssat_threshold: float = method_param("hardening", "ssat", "threshold", 0.95)

    def checks(self) -> Iterator[Check]:
        if self.hardening != "none":
            yield _choice("hardening", self.hardening, hardening_names())
        yield "hardening-eps", 0 < self.hardening_eps <= 1, "must be in (0, 1]"
        yield "hardening-steps", self.hardening_steps >= 1, "must be >= 1"
        yield "labelled-fraction", 0 < self.labelled_fraction <= 1, "must be in (0, 1]"
        yield ("labelled-fraction", self.labelled_fraction < 1 or "ssat" not in (self.hardening, *self.defence_model_names),
               "must be < 1 with ssat: the site's other training images are its unlabelled pool")
        yield "hardening.trades.beta", self.hardening_trades_beta > 0, "must be > 0"
        yield "hardening.mart.beta", self.hardening_mart_beta > 0, "must be > 0"
        yield "hardening.ssat.threshold", 0 < self.hardening_ssat_threshold < 1, "must be in (0, 1)"
        used = {self.hardening, *self.defence_model_names}
        for f in fields(HardeningSection):  # also catches `flwr run --run-config hardening.x.y=...`, which
            if "method" in f.metadata and getattr(self, f.name) != f.default:  # drops an unquoted `hardening`
                yield (key_of(f), f.metadata["method"] in used,
                       f"is set but hardening {self.hardening!r} does not use it (nor defence-models); quote "
                       "dotted keys in TOML and --run-config")

    @property
    def defence_model_names(self) -> tuple[str, ...]:
        """The members of a defence comparison (``defence-models``), each a hardening method or none."""
        return _names("defence-models", self.defence_models, hardening_names)

    def hardening_params(self, name: str) -> dict[str, Any]:
        """Method ``name``'s constructor keywords set by ``hardening.<name>.*`` keys."""
        return {f.metadata["arg"]: getattr(self, f.name) for f in fields(HardeningSection)
                if f.metadata.get("method") == name}


@dataclass(frozen=True)
class DetectionSection(Section):
    """Detector-gated routing in a defence comparison's evaluation."""

    detector: str = ""  # "", mahalanobis or kd-bu
    detector_fpr: float = 0.1
    router_hardened: str = "pgd-at"

    def checks(self) -> Iterator[Check]:
        if self.detector:
            yield _choice("detector", self.detector, detector_names())
        yield "detector-fpr", 0 < self.detector_fpr < 1, "must be in (0, 1)"


@dataclass(frozen=True)
class PrivacySection(Section):
    """What a site's replies may reveal: cell suppression, metric DP, DP-SGD, pruning, inversion audits."""

    min_cell_size: int = 10
    metric_dp: str = "none"
    metric_epsilon: float = 1.0
    metric_delta: float = 1e-5
    metric_epsilon_budget: float = 10.0
    dp_epsilon: float = 0.0
    dp_delta: float = 1e-5
    dp_max_grad_norm: float = 1.0
    prune_fraction: float = 0.0
    inversion_audit: str = ""
    inversion_images: int = 1
    inversion_iterations: int = 200

    def checks(self) -> Iterator[Check]:
        yield "min-cell-size", self.min_cell_size >= 0, "must be >= 0 (0: no suppression)"
        yield "metric-dp", self.metric_dp in METRIC_DP, "must be none, laplace or gaussian"
        yield "metric-epsilon", self.metric_epsilon > 0, "must be > 0"
        yield "metric-delta", 0 < self.metric_delta < 1, "must be in (0, 1)"
        yield "metric-epsilon-budget", self.metric_epsilon_budget >= self.metric_epsilon, "must be >= metric-epsilon"
        yield "dp-epsilon", self.dp_epsilon >= 0, "must be >= 0 (0: off)"
        yield "dp-delta", 0 < self.dp_delta < 1, "must be in (0, 1)"
        yield "dp-max-grad-norm", self.dp_max_grad_norm > 0, "must be > 0"
        yield "prune-fraction", 0 <= self.prune_fraction < 1, "must be in [0, 1)"
        yield "inversion-audit", self.inversion_audit in INVERSION_AUDITS, "must be '', dlg, idlg or ig"
        yield "inversion-images", self.inversion_images >= 1, "must be >= 1"
        yield "inversion-iterations", self.inversion_iterations >= 1, "must be >= 1"


@dataclass(frozen=True)
class ThreatSection(Section):
    """Simulated attackers among the sites (simulation only: a real site refuses them)."""

    threat: str = "none"
    target_class: int = 0
    poison_fraction: float = 0.1
    trigger_size: int = 3
    boost: float = 1.0

    def checks(self) -> Iterator[Check]:
        yield _choice("threat", self.threat, THREATS)
        yield "poison-fraction", 0 <= self.poison_fraction <= 1, "must be in [0, 1]"
        yield "boost", self.boost > 0, "must be > 0"


@dataclass(frozen=True)
class AggregationSection(Section):
    """How the server samples sites and aggregates their updates (every aggregation check is here)."""

    aggregation: str = "fedavg"
    num_malicious: int = 0
    krum_select: int = 0
    trim_beta: float = 0.2
    clip_norm: float = 0.0
    noise_multiplier: float = 0.0
    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    min_sites: int = 2
    round_timeout: float = 3600.0

    def checks(self) -> Iterator[Check]:
        rule, f = self.aggregation, self.num_malicious
        yield _choice("aggregation", rule, AGGREGATIONS)
        yield "num-malicious", f >= 0, "must be >= 0"
        yield ("num-malicious", self.min_sites >= min_sites(rule, f),
               f"{rule} needs min-sites >= {min_sites(rule, 1) - min_sites(rule, 0)} * num-malicious + "
               f"{min_sites(rule, 0)}")
        yield "krum-select", self.krum_select >= 0, "must be >= 0 (0: min-sites - num-malicious)"
        yield "trim-beta", 0 <= self.trim_beta < 0.5, "must be in [0, 0.5)"
        yield "clip-norm", self.clip_norm >= 0, "must be >= 0 (0: no norm bounding)"
        yield "noise-multiplier", self.noise_multiplier >= 0, "must be >= 0"
        yield ("noise-multiplier", self.noise_multiplier == 0 or self.clip_norm > 0,
               "needs clip-norm > 0 (noise is calibrated to the clip)")
        yield "fraction-train", 0 < self.fraction_train <= 1, "must be in (0, 1]"
        yield "fraction-evaluate", 0 < self.fraction_evaluate <= 1, "must be in (0, 1]"
        yield "min-sites", self.min_sites >= 1, "must be >= 1"
        yield "round-timeout", self.round_timeout > 0, "must be > 0"


@dataclass(frozen=True)
class SecureAggregationSection(Section):
    """SecAgg+ over evaluation replies (server/secure_evaluation.py) and optionally training updates."""

    secure_aggregation: bool = False
    secure_aggregation_train: bool = False  # training updates too: quantised, masked FedAvg
    secure_aggregation_neighbours: int = 12  # SecAgg+ neighbours per site (all sites if fewer)

    def checks(self) -> Iterator[Check]:
        yield "secure-aggregation-neighbours", self.secure_aggregation_neighbours >= 2, "must be >= 2"


@dataclass(frozen=True)
class SegmentationSection(Section):
    """A ``task = "segmentation"`` run: its model, attacks and adversarial training."""

    seg_model: str = "unet"
    seg_attacks: str = "pgd,dag,multiscale,asma"
    seg_attack_steps: int = 10
    seg_target: str = "shift:3"
    seg_max_volumes: int = 0
    seg_adversarial_training: bool = False
    seg_adv_eps: float = 4 / 255
    seg_adv_steps: int = 3

    def checks(self) -> Iterator[Check]:
        yield _choice("seg-model", self.seg_model, SEG_MODELS)
        if self.seg_attacks != SegmentationSection.seg_attacks or self.seg_target != SegmentationSection.seg_target:
            yield from _segmentation_checks(self.seg_attacks, self.seg_target)  # MONAI-heavy: only when changed
        yield "seg-attack-steps", self.seg_attack_steps >= 1, "must be >= 1"
        yield "seg-max-volumes", self.seg_max_volumes >= 0, "must be >= 0 (0: all)"
        yield "seg-adv-eps", 0 < self.seg_adv_eps <= 1, "must be in (0, 1]"
        yield "seg-adv-steps", self.seg_adv_steps >= 1, "must be >= 1"


def _segmentation_checks(attacks: str, target: str) -> Iterator[Check]:
    from ..segmentation.attacks.targets import parse_target
    from ..segmentation.evaluation import parse_attack_spec

    specs = []
    for spec in (a for a in attacks.split(",") if a.strip()):
        try:
            specs.append(parse_attack_spec(spec))
        except ValueError as exc:
            yield "seg-attacks", False, str(exc).removeprefix("seg-attacks: ")
    yield "seg-attacks", bool(specs), "needs at least one attack"
    yield "seg-attacks", len(set(specs)) == len(specs), "an attack is listed twice"
    try:
        parse_target(target)
    except ValueError as exc:
        yield "seg-target", False, str(exc).removeprefix("target: ")


S = TypeVar("S", bound=Section)


class _View(Generic[S]):
    """``cfg.<section>``: the section's values of a :class:`RunConfig`, as that section."""

    def __init__(self, section: type[S]) -> None:
        self.section = section

    def __set_name__(self, owner: type, name: str) -> None:
        self.section.view = name  # type: ignore[attr-defined]

    def __get__(self, cfg: Any, owner: type | None = None) -> S:
        if cfg is None:
            return self  # type: ignore[return-value]
        return self.section(**{f.name: getattr(cfg, f.name) for f in fields(self.section)})


# -- the run config -----------------------------------------------------------------------------
@dataclass(frozen=True)
class RunConfig(SegmentationSection, SecureAggregationSection, AggregationSection, ThreatSection, PrivacySection,
                DetectionSection, HardeningSection, AttackSection, TrainingSection, ModelSection, DataSection,
                RunSection):
    """Settings of one federated run: every section's fields, readable flat or by section.

    The sections are the bases (fields come in reverse order: ``run`` first); each has a view
    below. A branch that needs a new key before it has a section adds it as a field here, in a
    block at the end; moving it into a section later is a cut and paste (see the README).
    """

    run = _View(RunSection)
    data = _View(DataSection)
    network = _View(ModelSection)
    training = _View(TrainingSection)
    attack = _View(AttackSection)
    defence = _View(HardeningSection)
    detection = _View(DetectionSection)
    privacy = _View(PrivacySection)
    threats = _View(ThreatSection)
    federation = _View(AggregationSection)
    secagg = _View(SecureAggregationSection)
    segmentation = _View(SegmentationSection)

    # --- keys not yet in a section: a branch's new fields go here, in a block headed
    # `# --- <branch>: <topic> ---`, their checks in `checks` below. To move one into a section,
    # cut the field (and its check) into that section and regenerate pyproject.toml.

    def __post_init__(self) -> None:
        _raise_first(self, self.checks())

    def checks(self) -> Iterator[Check]:
        """Every check: each section's own (in key order), then those across sections."""
        for section in SECTIONS:
            yield from vars(section).get("checks", Section.checks)(self)
        yield "target-class", 0 <= self.target_class < self.num_classes, "must be a class index below num-classes"
        yield "trigger-size", 1 <= self.trigger_size <= self.image_size - 2, "must be in [1, image-size - 2]"
        yield "dp-epsilon", self.dp_epsilon == 0 or self.norm != "batch", "DP-SGD needs norm 'group'"
        yield "amp", self.amp == "none" or self.dp_epsilon == 0, "DP-SGD (Opacus) trains in full precision; use none"
        yield ("hardening", self.hardening == "none" or self.dp_epsilon == 0,
               "cannot be combined with DP-SGD (dp-epsilon > 0): Opacus' per-sample gradients do not cover "
               "adversarial crafting")
        yield ("clip-norm", self.clip_norm == 0 or self.norm != "batch",
               "needs norm 'group' or 'none' (BatchNorm's integer counters cannot be clipped)")
        yield ("defence-models", not self.defence_models or (self.task == "classification" and self.hardening == "none"
                                                             and self.dp_epsilon == 0),
               "needs task 'classification', hardening 'none' (each member has its own) and no DP-SGD")
        yield ("transfer", not self.transfer or self.task == "classification",
               "needs task 'classification' (transfer counts are classifications fooled)")
        yield "landscape", not self.landscape or self.task == "classification", "needs task 'classification'"
        yield ("detector", not self.detector or "none" in self.defence_model_names,
               "needs defence-models with 'none' (the standard model the detector watches)")
        yield ("router-hardened", not self.detector or (self.router_hardened != "none"
                                                        and self.router_hardened in self.defence_model_names),
               "must name a hardened member of defence-models")
        yield ("secure-aggregation-train", not self.secure_aggregation_train or self.aggregation == "fedavg",
               f"aggregation '{self.aggregation}' needs each site's own update, which secure aggregation hides; "
               "use aggregation = \"fedavg\" or secure-aggregation-train = false")
        yield ("secure-aggregation-train", not self.secure_aggregation_train or self.clip_norm == 0,
               "clip-norm clips each site's update at the server, which secure aggregation hides; "
               "bound updates at the sites (dp-epsilon) or set clip-norm = 0")

    def attacks_in_round(self, server_round: int) -> bool:
        """Whether the sites run the ``attacks`` suite in this round: the final round always, others by
        ``attack-rounds`` (every:K: rounds K, 2K, ...), so a run pays for attacks once unless asked."""
        period = self.attack_round_period
        return server_round >= self.num_server_rounds or (period > 0 and server_round % period == 0)

    @classmethod
    def from_flower(cls, run_config: Mapping[str, Any]) -> RunConfig:
        """Build from Flower's run config; unknown keys are errors (typos must not pass)."""
        values: dict[str, Any] = {}
        for key, value in run_config.items():
            if key not in ATTRS:
                close = difflib.get_close_matches(key, ATTRS, n=3)
                hint = (SITE_KEYS[key] if key in SITE_KEYS else f"did you mean {' or '.join(close)}?" if close
                        else f"known keys are {sorted(ATTRS)}")
                raise ConfigError(f"run config '{key}': unknown key; {hint}")
            values[ATTRS[key]] = _coerce(key, value, FIELDS[ATTRS[key]].type)
        return cls(**values)

    def to_flower(self) -> dict[str, bool | int | float | str]:
        """The flat dict Flower's records and ``--run-config`` use (kebab-case and dotted keys)."""
        return {key: getattr(self, attr) for key, attr in ATTRS.items()}


#: Keys a site sets for itself in its node config, never the coordinator's run config: refused
#: there with where they belong.
SITE_KEYS = {
    "device": "a site chooses its own device in its node config (--node-config \"device='cuda:1'\"); "
              "simulated sites get a GPU share with fedaegis simulate --client-gpus",
    "data-path": "a site names its own data in its node config (--node-config \"data-path='/data/cxr'\"); "
                 "simulated sites share --dataset",
}

SECTIONS: tuple[type[Section], ...] = tuple(reversed(RunConfig.__bases__))
FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in fields(RunConfig)}
ATTRS: dict[str, str] = {key_of(f): f.name for f in fields(RunConfig)}  # run-config key -> attribute


def section_of(key: str) -> type[Section] | None:
    """The section that defines ``key`` (None: a field of :class:`RunConfig` itself, not yet in a section)."""
    return next((s for s in SECTIONS if key in s.keys()), None)


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


# -- pyproject.toml's [tool.flwr.app.config] ---------------------------------------------------
def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def toml_key(key: str) -> str:
    """A run-config key as a TOML key: dotted keys quoted (``hardening.trades.beta`` would
    otherwise make ``hardening`` a table, clashing with ``hardening = "none"``)."""
    return f'"{key}"' if "." in key else key


def pyproject_table(cfg: RunConfig | None = None) -> str:
    """The body of ``[tool.flwr.app.config]``: every key with its default, grouped by section."""
    cfg = cfg or RunConfig()
    lines: list[str] = []
    done: set[str] = set()
    for section in SECTIONS:
        lines.append(f"# cfg.{section.view}: {section.__doc__.splitlines()[0]}")
        for key in section.keys():
            lines.append(f"{toml_key(key)} = {_toml(getattr(cfg, ATTRS[key]))}")
            done.add(key)
    rest = [k for k in ATTRS if k not in done]
    if rest:
        lines.append("# not yet in a section")
        lines.extend(f"{toml_key(k)} = {_toml(getattr(cfg, ATTRS[k]))}" for k in rest)
    return "\n".join(lines) + "\n"


HEADER = "# Defaults of fedaegis.shared.run.config.RunConfig, generated: python -m fedaegis.shared.run.config pyproject.toml\n"


def write_pyproject(path: Path) -> bool:
    """Replace ``[tool.flwr.app.config]`` in ``path`` (up to its first blank line) by
    :func:`pyproject_table`; True if the file changed."""
    text = path.read_text()
    start = text.index("[tool.flwr.app.config]\n")
    ends = [i for i in (text.find("\n\n", start), text.find("\n[", start)) if i >= 0]
    end = min(ends) + 1 if ends else len(text)
    before = text[:start].removesuffix(HEADER)
    new = before + HEADER + "[tool.flwr.app.config]\n" + pyproject_table() + text[end:]
    if new != text:
        path.write_text(new)
    return new != text


if __name__ == "__main__":  # python -m fedaegis.shared.run.config [pyproject.toml]
    import sys

    if len(sys.argv) > 1:
        changed = write_pyproject(Path(sys.argv[1]))
        print(f"{sys.argv[1]}: {'updated' if changed else 'already up to date'}")
    else:
        print(pyproject_table(), end="")
