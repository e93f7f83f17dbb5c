"""Federated loss landscape: per-cell sums from two sites add up to the pooled surface, and the
loss rises faster along the gradient sign than along a random orthogonal direction."""

from __future__ import annotations

import torch
from attack_fixtures import trained

from fedaegis.shared.attacks.landscape import landscape_surface, loss_landscape
from fedaegis.shared.reply.protocol import check_metrics


def test_landscape_sums_and_shape() -> None:
    t = trained("pneumonia")
    x, y = t.x[:96], t.y[:96]
    pooled = loss_landscape(t.model, (x, y), points=4)
    sites = [loss_landscape(t.model, (x[:48], y[:48]), points=4),
             loss_landscape(t.model, (x[48:], y[48:]), points=4)]
    assert all(check_metrics({"num-examples": 48, **s}) == [] for s in sites)
    summed = {k: sites[0][k] + sites[1][k] for k in sites[0]}
    surface = landscape_surface(summed)
    print("\nmean CE, rows: gradient sign 0..8/255, columns: random orthogonal 0..8/255\n", surface.numpy().round(3))
    assert surface.shape == (4, 4)
    # the gradient-sign axis is per image, so sites add up to the pooled column exactly
    assert torch.allclose(surface[:, 0], landscape_surface(pooled)[:, 0], rtol=1e-4)
    with torch.no_grad():
        clean = torch.nn.functional.cross_entropy(t.model.eval()(x), y)
    assert abs(float(surface[0, 0]) - float(clean)) < 1e-4
    assert surface[3, 0] > surface[0, 3] and surface[3, 0] > surface[0, 0] + 0.1
