"""How well an attacker reconstructed a site's images: PSNR and SSIM, best-matched.

A batch reconstruction comes back in arbitrary order (the gradient of a batch is a
mean, so it is symmetric in its samples), so each reconstruction is paired with the
original it resembles most (Hungarian matching on PSNR) before scoring. Only sums and
a count leave this module: per-image scores would be per-sample values.
"""

from __future__ import annotations

import torch
from monai.metrics import PSNRMetric, SSIMMetric
from scipy.optimize import linear_sum_assignment

PSNR_CAP_DB = 100.0  # an exact copy has infinite PSNR; a cap keeps the sums finite


def _pairwise(metric, recon: torch.Tensor, orig: torch.Tensor) -> torch.Tensor:
    """``metric`` of every (reconstruction, original) pair: (B_recon, B_orig)."""
    b1, b2 = len(recon), len(orig)
    a = recon.repeat_interleave(b2, dim=0)
    b = orig.repeat(b1, *([1] * (orig.dim() - 1)))
    return metric(a, b).reshape(b1, b2)


def matched_scores(recon: torch.Tensor, orig: torch.Tensor, data_range: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """PSNR (dB, capped) and SSIM of each original with its best-matching reconstruction."""
    if recon.shape[1:] != orig.shape[1:]:
        raise ValueError(f"shapes differ: reconstruction {tuple(recon.shape)}, original {tuple(orig.shape)}")
    # A diverged attack (NaN) must score as a failure, not as the cap.
    recon = recon.detach().float().nan_to_num(0.0, data_range, 0.0).clamp(0, data_range)
    orig = orig.detach().float()
    spatial = orig.dim() - 2
    psnr = PSNRMetric(max_val=data_range, reduction="none")
    ssim = SSIMMetric(spatial_dims=spatial, data_range=data_range, win_size=min(7, *orig.shape[2:]), reduction="none")
    psnr_all = _pairwise(psnr, recon, orig).nan_to_num(0.0, PSNR_CAP_DB).clamp(max=PSNR_CAP_DB)
    rows, cols = linear_sum_assignment(psnr_all.numpy(), maximize=True)
    # SSIM lies in [-1, 1], but MONAI computes it in float32: a near-exact reconstruction can
    # score 1 + a few ulps (1.0000004 seen), so clamp to the metric's range.
    ssim_m = ssim(recon[rows], orig[cols]).reshape(-1).clamp(-1.0, 1.0)
    return psnr_all[rows, cols], ssim_m


def quality_sums(recon: torch.Tensor, orig: torch.Tensor, prefix: str = "inversion") -> dict[str, float | int]:
    """``{prefix}.psnr-sum``, ``{prefix}.ssim-sum``, ``{prefix}.images-count``: means are sum / count."""
    psnr, ssim = matched_scores(recon, orig)
    return {
        f"{prefix}.psnr-sum": float(psnr.sum()),
        f"{prefix}.ssim-sum": float(ssim.sum()),
        f"{prefix}.images-count": int(len(psnr)),
    }
