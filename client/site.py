"""Which data a site holds: its own folder (a real hospital) or a simulated partition.

A real SuperNode is started with ``--node-config "data-path='/data/xray' modality='DX,CR'
body-part='CHEST'"``; a simulated one gets Flower's ``partition-id`` and
``num-partitions`` and takes its share of the run's dataset. Loaded data is cached
per process, so Ray actors read files once, not every round.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from ..shared.run.config import RunConfig
from ..shared.data import DataValidationError, ImageSet, load_site_data, partition_indices
from ..shared.data.partition import by_group
from ..shared.data.transforms import InputPipeline
from ..shared.data.types import LazyImages
from ..shared.site.ledger import PrivacyLedger, derived_seed, site_secret
from ..shared.site.policy import SitePolicy, eval_size, is_simulated, site_policy

log = logging.getLogger("fedaegis.site")  # the site's own log: never sent to the server


@dataclass(frozen=True)
class SiteData:
    train: ImageSet
    test: ImageSet

    @property
    def skipped(self) -> int:
        """Files this site could not use (counted once, whichever split they were meant for)."""
        return len(set(self.train.skipped) | set(self.test.skipped))


def _codes(value: object) -> frozenset[str] | None:
    if value is None or value == "":
        return None
    return frozenset(v.strip().upper() for v in str(value).split(",") if v.strip())


@lru_cache(maxsize=8)
def _load(
    source: str,
    split: str,
    image_size: tuple[int, ...],
    num_classes: int,
    seed: int,
    modality: frozenset[str] | None,
    body_part: frozenset[str] | None,
    spacing: tuple[float, ...] | None = None,
) -> ImageSet:
    return load_site_data(
        source,
        split=split,
        image_size=image_size,
        num_classes=num_classes,
        expected_modality=set(modality) if modality else None,
        expected_body_part=set(body_part) if body_part else None,
        seed=seed,
        spacing=spacing,
    )


@lru_cache(maxsize=8)
def _partitions(
    source: str, split: str, cfg_key: tuple, num_partitions: int, scheme: str, alpha: float, seed: int
) -> list:
    data = _load(source, split, *cfg_key)

    def split(labels):
        return partition_indices(labels, num_partitions, scheme, alpha=alpha, seed=seed)

    # volumes and series folders: whole patients go to one site, never their slices or series apart
    return by_group(data.labels.numpy(), data.groups, split) if data.groups else split(data.labels.numpy())


def state_dir(policy: SitePolicy, node_config: Mapping[str, object]) -> Path:
    """The site's state folder (ledger, secret, log); each simulated site has its own below it."""
    if is_simulated(node_config):
        return policy.state_dir / f"simulated-{node_config['partition-id']}-of-{node_config.get('num-partitions', 0)}"
    return policy.state_dir


def site_device(cfg: RunConfig, node_config: Mapping[str, object]) -> torch.device:
    """The device this site computes on: its node config's ``device`` (``cuda``, ``cuda:1``, ``cpu``;
    default the first CUDA device if there is one), the site's choice alone. The request's ``amp``
    must suit it (fp16 needs CUDA)."""
    from ..shared.training import check_amp, node_device

    device = node_device(node_config)
    check_amp(cfg.amp, device)
    return device


def site_ledger(node_config: Mapping[str, object]) -> PrivacyLedger:
    return PrivacyLedger(state_dir(site_policy(node_config), node_config))


def site_seed(cfg: RunConfig, node_config: Mapping[str, object], *purpose: object) -> int:
    """A seed only the site knows: its secret with the dataset and a purpose, nothing the server picks."""
    policy = site_policy(node_config)
    data = node_config.get("data-path") or cfg.dataset
    return derived_seed(site_secret(state_dir(policy, node_config)), data, cfg.image_size, *purpose)


def evaluation_subset(data: ImageSet, requested: int, cfg: RunConfig, node_config: Mapping[str, object]) -> ImageSet:
    """The site's fixed evaluation set of one of its policy's sizes for a request of ``requested`` samples.

    Each size is its own draw from the site's secret (no set is a prefix of another), the
    same in every round and run: the server's seed, round and sample count cannot select
    samples within it, so two requests never differ by one patient.
    """
    size = eval_size(site_policy(node_config), requested, len(data))
    if size >= len(data):
        return data
    gen = torch.Generator().manual_seed(site_seed(cfg, node_config, "evaluation", len(data), size))
    return data.subset(torch.randperm(len(data), generator=gen)[:size].sort().values)


_logged: set[tuple[str, str]] = set()


def _log_skipped(data: ImageSet, source: str) -> None:
    """Name every skipped or rejected file and why, in the site's own log (once per process)."""
    for name, why in data.skipped.items():
        if (source, name) not in _logged:
            _logged.add((source, name))
            log.warning("site data %s: skipped %s: %s", source, name, why)


#: Skip reasons, grouped for the one-line summary (first match wins); the rest are "unreadable".
_SKIP_KINDS = (("Modality", "wrong modality"), ("BodyPartExamined", "wrong body part"),
               ("PatientPosition", "bad patient position"), ("not a supported image", "not an image"),
               ("class folder", "outside the class folders"), ("no label", "unlabelled"),
               ("differs from", "odd size"))


def skip_summary(skipped: Mapping[str, str]) -> str:
    """``"3 files (2 wrong modality, 1 unreadable)"``: counts only, no file names (those stay in the log)."""
    counts: dict[str, int] = {}
    for why in skipped.values():
        kind = next((k for key, k in _SKIP_KINDS if key in why), "unreadable")
        counts[kind] = counts.get(kind, 0) + 1
    parts = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return f"{len(skipped)} file{'s' if len(skipped) != 1 else ''} ({parts})"


def simulated_key(cfg: RunConfig) -> tuple:
    """What a simulated site's data depends on: sizes, classes, seed and the declared modality/body part."""
    return (cfg.shape.image_size, cfg.shape.classes, cfg.seed, _codes(cfg.modality),
            _codes(cfg.body_part), _spacing(cfg))


def _spacing(cfg: RunConfig) -> tuple[float, ...] | None:
    return tuple(float(v) for v in cfg.spacing.split(",")) if cfg.spacing.strip() else None


def augmented(data: ImageSet, seed: int) -> ImageSet:
    """``data`` whose batches are randomly flipped and slightly moved (training only, ``augment``)."""
    if isinstance(data.images, LazyImages):
        lazy = data.images
        pipeline = InputPipeline(scale=lazy.pipeline.scale, channels=lazy.pipeline.channels,
                                 size=lazy.pipeline.size, augment=True, seed=seed)
        images = LazyImages(lazy.stored, pipeline)
    else:
        images = LazyImages(data.images, InputPipeline(augment=True, seed=seed))
    return ImageSet(images, data.labels, data.num_classes, data.source, dict(data.skipped))


def site_data(cfg: RunConfig, node_config: Mapping[str, object]) -> SiteData:
    """Load (once) and validate this site's train and test splits."""
    if node_config.get("data-path"):
        source = str(node_config["data-path"])
        key = (cfg.shape.image_size, cfg.shape.classes, cfg.seed,
               _codes(node_config.get("modality")), _codes(node_config.get("body-part")), _spacing(cfg))
        data = SiteData(_load(source, "train", *key), _load(source, "test", *key))
        for split in (data.train, data.test):
            _log_skipped(split, source)
    else:
        if "partition-id" not in node_config or "num-partitions" not in node_config:
            raise DataValidationError(
                "node config", "needs 'data-path' (a real site) or 'partition-id' and "
                "'num-partitions' (a simulated site)",
            )
        pid, n = int(node_config["partition-id"]), int(node_config["num-partitions"])  # type: ignore[arg-type]
        key = simulated_key(cfg)
        splits = []
        for split in ("train", "test"):
            parts = _partitions(cfg.dataset, split, key, n, cfg.partitioning, cfg.dirichlet_alpha, cfg.seed)
            loaded = _load(cfg.dataset, split, *key)
            if pid == 0:
                _log_skipped(loaded, cfg.dataset)
            splits.append(loaded.subset(torch.as_tensor(parts[pid])))
        if pid != 0:  # the shared dataset's unreadable files are reported once, not by every site
            splits = [ImageSet(s.images, s.labels, s.num_classes, s.source) for s in splits]
        data = SiteData(*splits)
    for split in (data.train, data.test):
        check_against_config(split, cfg)
    # both splits stay as stored: evaluation, attacks, detectors and defences draw batches from the
    # test split (a small subset, such as a detector's calibration images, may be made whole)
    return SiteData(augmented(data.train, cfg.seed) if cfg.augment else data.train, data.test)


def check_against_config(data: ImageSet, cfg: RunConfig) -> None:
    """The site's data must fit the federation's model (:attr:`RunConfig.shape`); name the key that disagrees."""
    shape = cfg.shape
    if len(data) == 0:
        raise DataValidationError(data.source, "the site has no samples in this split")
    if data.spatial_dims != shape.spatial_dims:
        raise DataValidationError(
            data.source, f"images are {data.spatial_dims}D but run config 'spatial-dims' is {shape.spatial_dims}"
        )
    if data.in_channels != shape.channels:
        raise DataValidationError(
            data.source, f"images have {data.in_channels} channels but run config 'in-channels' is {shape.channels}"
        )
    if tuple(data.images.shape[2:]) != shape.image_size:
        raise DataValidationError(
            data.source, f"images are {tuple(data.images.shape[2:])} but run config 'image-size' is {shape.size}"
        )
    if int(data.labels.max()) >= shape.classes or int(data.labels.min()) < 0:
        raise DataValidationError(
            data.source, f"labels span {int(data.labels.min())}..{int(data.labels.max())} but run config "
            f"'num-classes' is {shape.classes}",
        )
