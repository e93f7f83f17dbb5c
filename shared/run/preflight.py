"""Preflight: every mistake a run can make is found before Ray starts or a row is written.

Without it a wrong dataset, class count or model name surfaces only inside Ray, as one
traceback per site per round, and leaves a half-written run behind. Every entry point
(``fedaegis simulate``, ``--resume``, sweep points, ``evaluate`` and the ServerApp) runs the
checks here first; each failure is a :class:`PreflightError`, one line naming the option
or file at fault, as the user spelled it (``--sites``, ``-c num-classes``, ``run config
'model'``: see :class:`Names`).

Classes are inferred by one rule, stated in every message it causes: ``num-classes`` is
1 + the largest *training* label. Val/test labels must fall below it, and a training set in
which fewer than half of the implied classes occur is refused (a stray "unknown" label such as
255 would otherwise make up the class count); smaller gaps are warnings.
"""

from __future__ import annotations

import inspect
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .config import ConfigError, DataShape, RunConfig
from .redact import known_secrets, mask_secrets

if TYPE_CHECKING:
    from ..data import ImageSet

NPZ_SPLITS = ("train", "val", "test")
REQUIRED_SPLITS = ("train", "test")  # what every site loads
INFERENCE_RULE = "num-classes is inferred as 1 + the largest train label; set -c num-classes to declare it"


class PreflightError(ValueError):
    """A run cannot start; the message is one line naming the option or file at fault."""


@dataclass(frozen=True)
class Names:
    """How the user spelled each run-config key (``--sites``, ``-c num-classes``); default ``run config 'key'``."""

    given: Mapping[str, str] = field(default_factory=dict)

    def __call__(self, key: str) -> str:
        return self.given.get(key, f"run config '{key}'")

    def rewrite(self, message: str) -> str:
        """Replace ``run config 'key'`` in ``message`` by the user's own spelling of ``key``."""
        return re.sub(r"run config '([a-z0-9-]+)'", lambda m: self(m.group(1)), message)


@dataclass(frozen=True)
class DataFacts:
    """What the server's model must match, read from the data on this machine."""

    in_channels: int
    spatial_dims: int
    image_size: int
    num_classes: int
    split_sizes: dict[str, int]
    warnings: tuple[str, ...] = ()

    @property
    def shape(self) -> DataShape:
        return DataShape(self.in_channels, self.spatial_dims, self.image_size, self.num_classes)

    def run_config(self) -> dict[str, int]:
        """The shape's run-config keys (what :attr:`RunConfig.shape` is read from)."""
        return {"in-channels": self.in_channels, "spatial-dims": self.spatial_dims,
                "image-size": self.image_size, "num-classes": self.num_classes}


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def dataset_facts(source: str, num_classes: int | None = None, names: Names = Names(),
                  spatial_dims: int | None = None) -> DataFacts:
    """Load every split of ``source`` and check it: readable, finite, labels within the classes.

    ``num_classes`` is the declared class count (``-c num-classes``); None infers it (see the
    module docstring for the rule). ``spatial_dims`` 3 reads a folder as volumes (DICOM series,
    NIfTI files); ``image_size`` follows the documented rule (``SIZE_RULE`` in shared/data/transforms.py).
    """
    from ..data import DataValidationError, load_site_data
    from ..data.sources import EMBEDDED_PREFIX, embedded_path

    flag = names("dataset")
    try:
        text = str(source)
        path = embedded_path(text[len(EMBEDDED_PREFIX):]) if text.startswith(EMBEDDED_PREFIX) else Path(text).expanduser()
        if path.is_dir():  # a class-per-folder tree: classes are its sub-folders, no split in the files
            try:
                data = load_site_data(path, split="all", num_classes=num_classes,
                                      image_size=(28, 28, 28) if spatial_dims == 3 else None)
            except DataValidationError as exc:
                if spatial_dims != 3:
                    raise
                raise PreflightError(f"{names('spatial-dims')} = 3 but {flag} {_one_line(exc)}") from None
            return _facts(data, num_classes or data.num_classes, {"all": len(data)}, ())
        if path.suffix.lower() != ".npz" or not path.is_file():
            load_site_data(path, split="train")  # raises the loader's own message
        splits = _npz_splits(path, flag)
        declared = num_classes is not None
        if not declared:
            labels = load_site_data(path, split="train").labels
            top = int(labels.max()) + 1
            present = sorted(set(labels.tolist()))
            missing = sorted(set(range(top)) - set(present))
            if len(present) * 2 < top:
                raise PreflightError(
                    f"{flag} {path}: train_labels: label {top - 1} implies {top} classes but only {len(present)} "
                    f"occur ({_span(present)}); a stray label? ({INFERENCE_RULE})")
            warnings = (f"{path}: no training image of class {_span(missing)} of 0..{top - 1} ({INFERENCE_RULE})",
                        ) if missing else ()
            num_classes = top
        else:
            warnings = ()
        loaded = {}
        for split in splits:
            try:
                loaded[split] = load_site_data(path, split=split, num_classes=num_classes)
            except DataValidationError as exc:
                hint = "" if "out of range" not in exc.problem else (
                    f"{names('num-classes')} = {num_classes}" if declared else INFERENCE_RULE)
                raise PreflightError(f"{flag} {_one_line(exc)}" + (f" ({hint})" if hint else "")) from None
        return _facts(loaded["train"], num_classes, {s: len(d) for s, d in loaded.items()}, warnings)
    except DataValidationError as exc:
        raise PreflightError(f"{flag} {_one_line(exc)}") from None
    except OSError as exc:
        raise PreflightError(f"{flag} {source}: {_one_line(exc)}") from None


def _npz_splits(path: Path, flag: str) -> list[str]:
    """The splits an ``.npz`` holds; train and test must be there, each with images and labels."""
    if not zipfile.is_zipfile(path):
        head = path.read_bytes()[:6]
        what = "a single .npy array" if head.startswith(b"\x93NUMPY") else "not a zip archive"
        raise PreflightError(f"{flag} {path}: not a MedMNIST .npz ({what}; expected a zip of train_images, "
                             "train_labels, test_images, test_labels arrays)")
    with zipfile.ZipFile(path) as archive:
        keys = {Path(n).stem for n in archive.namelist()}
    splits = []
    for split in NPZ_SPLITS:
        have = [k for k in (f"{split}_images", f"{split}_labels") if k in keys]
        if split in REQUIRED_SPLITS or have:
            missing = [k for k in (f"{split}_images", f"{split}_labels") if k not in keys]
            if missing:
                raise PreflightError(f"{flag} {path}: missing key {missing[0]!r} (keys: {sorted(keys)})")
            splits.append(split)
    return splits


def _facts(data: ImageSet, num_classes: int, sizes: dict[str, int], warnings: tuple[str, ...]) -> DataFacts:
    from ..data.transforms import choose_image_size  # the documented rule (SIZE_RULE)

    sides = data.native_sides or (max(int(s) for s in data.images.shape[2:]),)
    return DataFacts(in_channels=data.in_channels, spatial_dims=data.spatial_dims,
                     image_size=choose_image_size(sides, data.spatial_dims), num_classes=int(num_classes),
                     split_sizes=sizes, warnings=warnings)


def _span(values: list[int]) -> str:
    shown = ", ".join(str(v) for v in values[:8])
    return shown + (f", ... ({len(values)} classes)" if len(values) > 8 else "")


def check_config(overrides: Mapping[str, Any], names: Names = Names()) -> RunConfig:
    """The run config, valid field by field, with a MONAI bundle's network as its model
    (:func:`with_bundle_network`); the error names the option the user gave."""
    try:
        cfg = RunConfig.from_flower(dict(overrides))
    except ConfigError as exc:
        raise PreflightError(names.rewrite(_one_line(exc))) from None
    return with_bundle_network(cfg, names)


def with_bundle_network(cfg: RunConfig, names: Names = Names()) -> RunConfig:
    """``cfg`` with the network of the MONAI bundle that ``weights`` names: ``model = "monai:<Name>"``
    and ``model-args`` its plain arguments, which is how the sites learn it (they never see the bundle).

    Only a bundle whose configs hold a ``network_def`` brings a network (restricted reading:
    :mod:`fedaegis.shared.models.bundle`); ``model`` must then be left at its default or name that
    network, and the network's shape arguments must agree with the run's (the data's). Idempotent.
    """
    if not cfg.weights or cfg.task != "classification":
        return cfg
    from ..models.bundle import SHAPE_ARGS, bundle_network, model_args, network_spec

    given = f"{names('weights')} = {cfg.weights!r}"
    try:
        bundle = bundle_network(cfg.weights)
    except ValueError as exc:
        raise PreflightError(f"{given}: {re.sub(r'^weights: ', '', _one_line(exc))}") from None
    if bundle is None:
        return cfg
    spec, where = bundle.spec, f"{bundle.file}: network_def"
    if cfg.model not in (RunConfig.model, spec.model):
        raise PreflightError(f"{names('model')} = {cfg.model!r} but {given} is a MONAI bundle of {spec.model} "
                             f"({bundle.file}); leave {names('model')} at its default or set it to {spec.model!r}")
    try:  # compared as the sites read them (a download switched off: shared/models/bundle.py)
        same_args = not cfg.model_args or network_spec(spec.model, model_args(cfg.model_args), target_key="model",
                                                       args_key="model-args").args == spec.args
    except ValueError:
        same_args = False
    if not same_args:
        raise PreflightError(f"{names('model-args')} = {cfg.model_args!r} differs from {where} of {given} "
                             f"({spec.args_json!r}); leave it out")
    for arg, value in spec.shape.items():
        attr = SHAPE_ARGS[arg]
        if value is not inspect.Parameter.empty and value != getattr(cfg, attr):
            key = attr.replace("_", "-")
            default = " (not given: the class default)" if arg in spec.defaulted else ""
            raise PreflightError(f"{given}: {where}.{arg} = {value!r}{default} does not fit the data: "
                                 f"{names(key)} = {getattr(cfg, attr)}")
    return replace(cfg, model=spec.model, model_args=spec.args_json)


def check_against_data(cfg: RunConfig, data: Mapping[str, int], names: Names = Names()) -> None:
    """The run config's image shape keys agree with the data's (``data``: :meth:`DataFacts.run_config`).

    ``image-size`` may differ (sites resize); dimensions and channels may not.
    """
    for key, what in (("spatial-dims", "{}D images"), ("in-channels", "{}-channel images")):
        have, want = data[key], getattr(cfg, key.replace("-", "_"))
        if have != want:
            raise PreflightError(f"{names(key)} = {want} but {names('dataset')} {cfg.dataset} holds {what.format(have)}")


def check_model(cfg: RunConfig, names: Names = Names()) -> None:
    """The model named in the config can be built for this data's shape (a bundle's: :func:`with_bundle_network`)."""
    from ..models.custom import check_outputs, load_weights
    from ..models.tasks import build_task_model, model_meta

    cfg = with_bundle_network(cfg, names)
    try:
        model = build_task_model(model_meta(cfg))
        if cfg.task == "classification" and ":" in cfg.model:  # the user's own: it must give the logits
            check_outputs(model, in_channels=cfg.in_channels, num_classes=cfg.num_classes,
                          spatial_dims=cfg.spatial_dims, image_size=cfg.image_size)
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        key = "seg-model" if cfg.task == "segmentation" else "model"
        value = cfg.seg_model if cfg.task == "segmentation" else cfg.model
        reason = re.sub(r"^[a-z_]+: ", "", _one_line(names.rewrite(str(exc))))
        raise PreflightError(f"{names(key)} = {value!r}: {reason}") from None
    if ":" in cfg.model and (cfg.dp_epsilon > 0 or cfg.clip_norm > 0):  # `norm` shapes only registered models
        from torch.nn.modules.batchnorm import _BatchNorm

        if any(isinstance(m, _BatchNorm) for m in model.modules()):
            wants = names("dp-epsilon") if cfg.dp_epsilon > 0 else names("clip-norm")
            raise PreflightError(f"{names('model')} = {cfg.model!r} has BatchNorm layers, which {wants} cannot "
                                 "train (DP-SGD's per-sample gradients, clipping BatchNorm's integer counters)")
    if cfg.weights:
        try:
            load_weights(model, cfg.weights)
        except ValueError as exc:
            reason = re.sub(r"^[a-z_]+: ", "", _one_line(str(exc)))
            raise PreflightError(f"{names('weights')} = {cfg.weights!r}: {reason}") from None


def check_amp_here(cfg: RunConfig, names: Names = Names()) -> None:
    """Simulated sites compute on this machine: fp16 mixed precision needs a CUDA device here."""
    import torch

    if cfg.amp == "fp16" and not torch.cuda.is_available():
        raise PreflightError(f"{names('amp')} = 'fp16': needs a CUDA device and this machine has none; "
                             "use 'bf16' on the CPU")


def check_sites(cfg: RunConfig, num_sites: int, names: Names = Names()) -> None:
    """The number of sites suits the run config (their data: :mod:`fedaegis.orchestration.preflight`)."""
    if num_sites < 1:
        raise PreflightError(f"{names('num-sites')}: need at least 1 site, got {num_sites}")
    if cfg.min_sites > num_sites:
        raise PreflightError(f"{names('min-sites')} = {cfg.min_sites} exceeds the {num_sites} sites "
                             f"({names('num-sites')})")


def check_database(url: str, flag: str = "--db-url") -> str:
    """Open ``url`` and make its schema ready; returns the URL with its password masked."""
    from sqlalchemy.exc import SQLAlchemyError

    from ..store import RunStore

    secrets = known_secrets(url)
    shown = mask_secrets(url, secrets)
    try:
        urlsplit(url).port  # noqa: B018 - SQLAlchemy's own error ("invalid literal for int()") names nothing
    except ValueError:
        raise PreflightError(f"{flag} {shown}: the port is not a number") from None
    try:
        store = RunStore(url)
        with store.engine.connect():
            pass
    except (SQLAlchemyError, ValueError, ImportError, OSError) as exc:
        reason = getattr(exc, "orig", None) or exc
        raise PreflightError(f"{flag} {shown}: cannot open the results database: "
                             f"{mask_secrets(_first_line(reason), secrets)}") from None
    finally:
        if "store" in locals():
            store.engine.dispose()
    return shown


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if text.startswith(type(exc).__name__) or ":" in text else f"{type(exc).__name__}: {text}"


def preflight(cfg: RunConfig, num_sites: int | None, names: Names = Names(), *, database: bool = True) -> None:
    """What the coordinator checks before a run starts: the database, the model, the number of sites.

    ``num_sites`` None (a deployment's SuperNodes) skips the sites' checks. A simulation also
    checks every simulated site's data, with the sites' own code, by
    :func:`fedaegis.orchestration.preflight.preflight` (the site's code lies above this layer).
    """
    if database:
        check_database(cfg.resolved_db_url, names("db-url"))
    check_model(cfg, names)
    if num_sites is not None:
        check_amp_here(cfg, names)
        check_sites(cfg, num_sites, names)
