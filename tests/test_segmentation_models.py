"""Segmenters by name: UNet and SegResNet, 2D and 3D, GroupNorm by default."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedaegis.shared.segmentation import build_segmenter
from fedaegis.shared.segmentation.models import size_multiple


@pytest.mark.parametrize("name", ["unet", "segresnet"])
@pytest.mark.parametrize("dims,shape", [(2, (2, 1, 32, 48)), (3, (1, 1, 16, 24, 16))])
def test_segmenter_maps_inputs_to_per_class_logits(name, dims, shape):
    torch.manual_seed(0)
    model = build_segmenter(name, spatial_dims=dims, channels=(4, 8, 16), num_classes=3)
    assert model(torch.rand(shape)).shape == (shape[0], 3, *shape[2:])
    norms = {type(m) for m in model.modules()}
    assert nn.GroupNorm in norms
    assert not any(issubclass(t, nn.modules.batchnorm._BatchNorm) for t in norms)


def test_unet_group_norm_divides_every_layer_including_the_class_layer():
    model = build_segmenter("unet", channels=(8, 16, 32, 64), num_res_units=1, num_groups=4)
    for m in model.modules():
        if isinstance(m, nn.GroupNorm):
            assert m.num_channels % m.num_groups == 0
    assert size_multiple((8, 16, 32, 64)) == 8


def test_batch_norm_option_and_bad_names():
    model = build_segmenter("unet", norm="batch", channels=(4, 8))
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with pytest.raises(ValueError, match="seg-model"):
        build_segmenter("vnet")
    with pytest.raises(ValueError, match="norm"):
        build_segmenter("unet", norm="layer")
    with pytest.raises(ValueError, match="spatial_dims"):
        build_segmenter("unet", spatial_dims=4)
