"""Mahalanobis detector (Lee et al., 2018) on the model's penultimate features.

Clean features of each class are modelled as Gaussians sharing one (tied)
covariance; adversarial inputs land far from every class mean, so the score is
the smallest Mahalanobis distance to a class mean. It needs no adversarial
examples to fit, only the site's clean labelled data.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data import ImageSet
from .base import FeatureFn, batched, feature_fn


class MahalanobisDetector(nn.Module):
    """``score(x) = min_c sqrt((f(x) - mu_c)^T P (f(x) - mu_c))``, P the tied precision matrix.

    ``shrinkage`` adds a multiple of the mean variance to the covariance diagonal,
    which keeps P well conditioned when a site has few samples per feature.
    """

    def __init__(self, model: nn.Module, *, features: FeatureFn | None = None,
                 shrinkage: float = 1e-3) -> None:
        super().__init__()
        self.model = model
        self._features = feature_fn(model, features)
        self.shrinkage = float(shrinkage)
        self.register_buffer("means", torch.empty(0))
        self.register_buffer("precision", torch.empty(0))

    def fit(self, data: ImageSet | tuple[torch.Tensor, torch.Tensor], *, batch_size: int | None = None
            ) -> MahalanobisDetector:
        """Class means and tied covariance of the clean features; classes absent locally are skipped."""
        x, y = (data.images, data.labels) if isinstance(data, ImageSet) else data
        f = batched(self._features, self.model, x, batch_size).double()
        classes = torch.unique(y)
        means = torch.stack([f[y == c].mean(0) for c in classes])
        centred = f - means[torch.searchsorted(classes, y)]
        cov = centred.T @ centred / max(len(f), 1)
        cov += self.shrinkage * cov.diagonal().mean().clamp_min(1e-12) * torch.eye(len(cov), dtype=cov.dtype)
        self.means = means.float()
        self.precision = torch.linalg.pinv(cov, hermitian=True).float()
        return self

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        """Mahalanobis distance of each input's features to each class mean, (N, classes)."""
        if self.means.numel() == 0:
            raise RuntimeError("MahalanobisDetector: call fit() first")
        d = self._features(x)[:, None, :] - self.means[None]
        sq = torch.einsum("ncd,de,nce->nc", d, self.precision, d)
        return sq.clamp_min(1e-12).sqrt()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.distances(x).amin(1)
