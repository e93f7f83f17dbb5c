import pytest
import torch
from opacus.validators import ModuleValidator

from fedaegis.shared.models import MODELS, LeNet, build_model

NORMED = sorted(set(MODELS) - {"lenet"})  # LeNet has no normalisation layers: tested on its own


@pytest.mark.parametrize("name", NORMED)
@pytest.mark.parametrize(("spatial_dims", "channels"), [(2, 1), (2, 3), (3, 1)])
def test_models_build_and_run(name, spatial_dims, channels):
    if spatial_dims == 3 and name in ("resnet34", "densenet121"):
        pytest.skip("large 3D networks are exercised by the 3D resnet10/resnet18 cases")
    model = build_model(name, in_channels=channels, num_classes=3, spatial_dims=spatial_dims, norm="group")
    x = torch.rand((2, channels) + (28,) * spatial_dims)
    assert model(x).shape == (2, 3)


@pytest.mark.parametrize("name", NORMED)
def test_group_norm_variants_are_opacus_compatible(name):
    model = build_model(name, in_channels=1, num_classes=2, norm="group")
    assert ModuleValidator.validate(model, strict=False) == []
    batch = build_model(name, in_channels=1, num_classes=2, norm="batch")
    assert ModuleValidator.validate(batch, strict=False) != []


def test_unknown_model_and_norm_are_named():
    with pytest.raises(ValueError, match="model"):
        build_model("vgg", in_channels=1, num_classes=2)
    with pytest.raises(ValueError, match="norm"):
        build_model("cnn", in_channels=1, num_classes=2, norm="layer")


def test_lenet_is_2d_without_norm_and_opacus_compatible():
    model = build_model("lenet", in_channels=3, num_classes=4, norm="none", image_size=32)
    assert isinstance(model, LeNet) and model(torch.rand(2, 3, 32, 32)).shape == (2, 4)
    assert ModuleValidator.validate(model, strict=False) == []
    for bad in ({"norm": "group"}, {"norm": "none", "spatial_dims": 3}):
        with pytest.raises(ValueError, match="lenet"):
            build_model("lenet", in_channels=1, num_classes=2, **bad)
