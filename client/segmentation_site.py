"""A site's segmentation work: its patients' volumes, local training, and the attack suite.

Simulated sites take their patients from the run's dataset (split by patient, so no
patient is at two hospitals); a real site names its own NIfTI folder (imagesTr and
labelsTr) in ``data-path``. Everything returned is a count or a sum.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

import torch
from torch import nn

from ..shared.run.config import RunConfig
from ..shared.segmentation import AdversarialTraining, SiteData, evaluate_segmentation, load_site_segmentation
from ..shared.training import data_to, train_segmenter


@lru_cache(maxsize=4)
def _load(root: str, site: int, num_sites: int, max_volumes: int, seed: int, spatial_dims: int) -> SiteData:
    return load_site_segmentation(
        root, site, num_sites, max_volumes=max_volumes or None, seed=seed, spatial_dims=spatial_dims
    )


def segmentation_data(cfg: RunConfig, node_config: Mapping[str, object]) -> SiteData:
    if node_config.get("data-path"):  # a real hospital: all its patients, split into train/test
        return _load(str(node_config["data-path"]), 0, 1, cfg.seg_max_volumes, cfg.seed, cfg.spatial_dims)
    return _load(cfg.dataset, int(node_config["partition-id"]), int(node_config["num-partitions"]),  # type: ignore[arg-type]
                 cfg.seg_max_volumes, cfg.seed, cfg.spatial_dims)


def train_segmentation(model: nn.Module, cfg: RunConfig, node_config: Mapping[str, object], seed: int,
                       device: torch.device | str = "cpu") -> dict:
    """The one training loop with segmentation's loss part (DiceCE, PGD-hardened with ``seg-adversarial-training``)."""
    data = segmentation_data(cfg, node_config)
    adversarial = (
        AdversarialTraining(eps=cfg.seg_adv_eps, steps=cfg.seg_adv_steps) if cfg.seg_adversarial_training else None
    )
    return train_segmenter(model, data.train, epochs=cfg.local_epochs, batch_size=cfg.batch_size,
                           lr=cfg.learning_rate, optimizer=cfg.optimizer, adversarial=adversarial,
                           device=device, amp=cfg.amp, seed=seed)


def evaluate_segmentation_site(model: nn.Module, cfg: RunConfig, node_config: Mapping[str, object], seed: int,
                               device: torch.device | str = "cpu") -> dict:
    data = segmentation_data(cfg, node_config)
    test = data_to(data.test, torch.device(device))
    attacks = [a.strip() for a in cfg.seg_attacks.split(",") if a.strip()]
    return evaluate_segmentation(model, test, attacks, cfg.epsilon_values, steps=cfg.seg_attack_steps,
                                 target=cfg.seg_target, seed=seed)
