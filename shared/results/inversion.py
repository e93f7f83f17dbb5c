"""Inversion audit: how well a gradient-inversion attacker rebuilds the images behind a site's update.

Sites send the summed PSNR and SSIM of their audited images and how many there were; rows ``psnr``
and ``ssim`` (means), qualified by the defence the update went through.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Family, Key, KeySet, RoundTotals

if TYPE_CHECKING:
    from .base import MetricValue


class Inversion(Family):
    name = "inversion"
    phases = ("inversion",)
    qualifier = "defence"
    key_sets = (KeySet("inversion", (
        Key(r"inversion\.images-count", "size", size="inversion.images-count"),
        Key(r"inversion\.psnr-sum", "sum", size="inversion.images-count"),
        Key(r"inversion\.ssim-sum", "sum", bound=1.0, size="inversion.images-count"),
    ), lambda cfg, train: train and bool(cfg.inversion_audit), lambda cfg: 3),)
    ratios = {"inversion-psnr": ("inversion.psnr-sum", "inversion.images-count"),
              "inversion-ssim": ("inversion.ssim-sum", "inversion.images-count")}

    def rows(self, totals: RoundTotals) -> list[MetricValue]:
        train = totals.train or {}
        if "inversion-psnr" not in train:
            return []
        cfg = totals.cfg
        defence = "dp-sgd" if cfg.dp_epsilon > 0 else "pruning" if cfg.prune_fraction else "none"
        return [self.row("inversion", "psnr", train["inversion-psnr"], defence),
                self.row("inversion", "ssim", train.get("inversion-ssim", float("nan")), defence)]


FAMILY = Inversion()
