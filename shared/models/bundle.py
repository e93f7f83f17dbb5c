"""A MONAI network by class name and plain arguments, from a bundle's ``network_def`` or the run config.

A MONAI bundle describes its network in ConfigParser syntax (``network_def`` in
``configs/inference.json``), where ``_target_`` may name any importable callable and ``$``
strings are Python expressions. The coordinator is honest-but-curious: if a site instantiated a
description taken from the coordinator's request, the coordinator could run any code at a
hospital. So ConfigParser is never used. One restricted reading, :func:`network_spec`, serves
the coordinator reading a bundle and every site building the model from the run config
(``model = "monai:DenseNet121"``, ``model-args`` a JSON object):

* the class is one of ``monai.networks.nets`` (``DenseNet121``, ``monai.networks.nets.DenseNet121``
  or ``monai:DenseNet121``), looked up there by name, never imported by path;
* every argument is a plain value: number, string, boolean, null, or lists and objects of those;
  no string begins with ``$`` (expression), ``@`` (reference) or ``%`` (macro), and no key begins
  with ``_`` (``_requires_``, ``_mode_``, ``_disabled_``, a nested ``_target_``), except the one
  top-level ``_target_`` of a bundle;
* nothing asks the constructor to fetch weights (``pretrained*``, ``weights`` must be absent,
  false, null or empty, and a class default that would download, as EfficientNetBN's
  ``pretrained=True``, is set to false): the weights come from the bundle's ``models/model.pt``,
  read by the coordinator only, and reach the sites as the first global model.

The network's shape arguments (:data:`SHAPE_ARGS`) are the run's ``spatial-dims``,
``in-channels`` and ``num-classes``: a bundle's must agree with them (checked in preflight) and
``model-args`` may not repeat them.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

PREFIX = "monai:"  # model = "monai:<Name>": a class of monai.networks.nets
NETS = "monai.networks.nets"
#: The bundle files whose ``network_def`` is read, first found first: the network as the bundle
#: is deployed (inference) before the one it was trained as (train), JSON before YAML.
BUNDLE_CONFIGS = tuple(f"configs/{stem}.{ext}" for stem in ("inference", "train") for ext in ("json", "yaml", "yml"))
#: Constructor arguments that are the run's shape: argument -> RunConfig attribute.
SHAPE_ARGS = {"spatial_dims": "spatial_dims", "in_channels": "in_channels", "n_input_channels": "in_channels",
              "out_channels": "num_classes", "num_classes": "num_classes"}
_MARKS = {"$": "a '$' expression", "@": "an '@' reference", "%": "a '%' macro"}


def _fetches(name: str, value: Any) -> bool:
    """An argument that would make the constructor download or read weights at the site."""
    return (name.startswith("pretrained") or name == "weights") and value not in (None, False, "")


def _plain(value: Any, where: str) -> None:
    """Raise ValueError naming ``where`` unless ``value`` is plain data (see the module docstring)."""
    if isinstance(value, str):
        if value[:1] in _MARKS:
            raise ValueError(f"{where} is {_MARKS[value[0]]} ({value[:40]!r}); only plain values are read, "
                             "no code runs from a model description")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _plain(item, f"{where}[{i}]")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _key(key, where)
            _plain(item, f"{where}.{key}")
    elif value is not None and not isinstance(value, bool | int | float):
        raise ValueError(f"{where} is a {type(value).__name__}, not a plain value")


def _key(key: Any, where: str) -> None:
    if not isinstance(key, str):
        raise ValueError(f"{where} has a key {key!r} that is not a string")
    if key == "_target_":
        raise ValueError(f"{where}._target_: a nested _target_ is refused; only the network's own class is built")
    if key.startswith("_"):
        raise ValueError(f"{where}.{key} is refused: ConfigParser's special keys are not read")


def plain_args(args: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``args`` as keyword arguments if each is plain data and none fetches weights; else ValueError naming the key."""
    if not isinstance(args, Mapping):
        raise ValueError(f"{where} must be an object of arguments, not {type(args).__name__}")
    for key, value in args.items():
        _key(key, where)
        if not key.isidentifier():
            raise ValueError(f"{where}.{key} is not an argument name")
        _plain(value, f"{where}.{key}")
        if _fetches(key, value):
            raise ValueError(f"{where}.{key} = {value!r} is refused: the weights come from the federation "
                             "(the coordinator's first global model), never from a download at a site")
    return dict(args)


def network_class(target: Any, where: str) -> type[nn.Module]:
    """The ``monai.networks.nets`` class ``target`` names, looked up there by name only; else ValueError."""
    name = target if isinstance(target, str) else ""
    for prefix in (PREFIX, NETS + "."):
        name = name.removeprefix(prefix)
    cls = None
    if name.isidentifier() and not name.startswith("_"):
        from monai.networks import nets  # imported on use: it costs seconds in every process

        cls = vars(nets).get(name)  # the module's own names: a lookup that runs no code
    if not (isinstance(cls, type) and issubclass(cls, nn.Module) and cls.__module__.startswith(NETS + ".")):
        raise ValueError(f"{where} {target!r} is not a MONAI network ({NETS})")
    return cls


@dataclass(frozen=True)
class NetworkSpec:
    """A restricted network description: a ``monai.networks.nets`` class and its plain arguments."""

    cls: type[nn.Module]
    args: dict[str, Any]  # every argument but the shape ones
    # shape argument -> value: given, else the class default (inspect.Parameter.empty where it has none)
    shape: dict[str, Any] = field(default_factory=dict)
    defaulted: frozenset[str] = frozenset()  # the shape arguments not given, so the class default's

    @property
    def model(self) -> str:
        """The run config's ``model``."""
        return PREFIX + self.cls.__name__

    @property
    def args_json(self) -> str:
        """The run config's ``model-args`` ("" when there are none)."""
        return json.dumps(self.args, sort_keys=True) if self.args else ""


def network_spec(target: Any, args: Mapping[str, Any], *, target_key: str, args_key: str) -> NetworkSpec:
    """The one reading of a network description, by the coordinator (a bundle) and the sites (the run config).

    ``target_key`` and ``args_key`` name where the class and the arguments came from, for the error.
    Shape arguments (:data:`SHAPE_ARGS`) the class takes are split off, with the class default
    where ``args`` omits one.
    """
    cls = network_class(target, target_key)
    args = plain_args(args, args_key)
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}
    defaulted = frozenset(name for name in SHAPE_ARGS if name in params and name not in args)
    shape = {name: args.pop(name, params[name].default) for name in SHAPE_ARGS if name in params}
    shape.update({name: args.pop(name) for name in list(args) if name in SHAPE_ARGS})
    for name, param in params.items():  # a default that downloads (EfficientNetBN's pretrained=True) is switched off
        if name not in args and _fetches(name, param.default) and param.default is not inspect.Parameter.empty:
            args[name] = False if isinstance(param.default, bool) else None
    return NetworkSpec(cls, args, shape, defaulted)


def model_args(text: str) -> dict[str, Any]:
    """The run config's ``model-args``: a JSON object of plain arguments, no shape argument; else ValueError."""
    if not text:
        return {}
    try:
        args = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"model-args is not JSON ({exc.msg} at character {exc.pos})") from None
    args = plain_args(args, "model-args")
    given = [name for name in args if name in SHAPE_ARGS]
    if given:
        raise ValueError(f"model-args.{given[0]} is the run's {SHAPE_ARGS[given[0]].replace('_', '-')}; "
                         "set that instead")
    return args


def args_problem(model: str, text: str) -> str | None:
    """Why ``model-args`` = ``text`` cannot be used with ``model`` (None: it can); read by the run config's checks."""
    if not model.startswith(PREFIX):
        return f"needs model '{PREFIX}<Name>' (the arguments of a MONAI network)"
    try:
        model_args(text)
    except ValueError as exc:
        return str(exc)
    return None


def build_monai(model: str, args_text: str, *, in_channels: int, num_classes: int, spatial_dims: int) -> nn.Module:
    """Build ``model`` (``monai:<Name>``) with ``model-args`` and the run's shape; ValueError, one line, if it cannot."""
    spec = network_spec(model, model_args(args_text), target_key="model:", args_key="model-args")
    run = {"in_channels": in_channels, "num_classes": num_classes, "spatial_dims": spatial_dims}
    kwargs = {**spec.args, **{name: run[SHAPE_ARGS[name]] for name in spec.shape}}
    try:
        return spec.cls(**kwargs)
    except Exception as exc:  # noqa: BLE001 - any constructor failure is reported as one line
        shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise ValueError(f"model: {model}({shown}) failed ({type(exc).__name__}: {' '.join(str(exc).split())})") from None


def _read(file: Path) -> Any:
    text = file.read_text()
    if file.suffix == ".json":
        return json.loads(text)
    import yaml

    return yaml.safe_load(text)  # plain data only: safe_load builds no Python objects


@dataclass(frozen=True)
class BundleNetwork:
    """A bundle's network: the file its ``network_def`` was read from, and the restricted description."""

    file: Path
    spec: NetworkSpec


def bundle_network(path: str | Path) -> BundleNetwork | None:
    """The network a MONAI bundle folder describes (see :data:`BUNDLE_CONFIGS`); None when ``path`` is no
    folder or none of its configs has a ``network_def``. A description outside the restricted form is a
    ValueError naming the file and the key."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        return None
    for name in BUNDLE_CONFIGS:
        file = folder / name
        if not file.is_file():
            continue
        try:
            config = _read(file)
        except Exception as exc:  # noqa: BLE001 - JSON and YAML errors of all kinds: not readable
            raise ValueError(f"weights: {file}: cannot be read ({type(exc).__name__}: {' '.join(str(exc).split())})"
                             ) from None
        if not isinstance(config, Mapping) or "network_def" not in config:
            continue
        node = config["network_def"]
        where = f"weights: {file}: network_def"
        if isinstance(node, str):
            _plain(node, where)  # a '$'/'@'/'%' string names what is refused
        if not isinstance(node, Mapping):
            raise ValueError(f"{where} must be an object with a _target_, not {type(node).__name__}")
        if "_target_" not in node:
            raise ValueError(f"{where} has no _target_")
        args = {k: v for k, v in node.items() if k != "_target_"}
        return BundleNetwork(file, network_spec(node["_target_"], args, target_key=f"{where}._target_",
                                                args_key=where))
    return None
