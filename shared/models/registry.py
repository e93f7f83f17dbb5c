"""Build a classifier by the name given in the run configuration."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .bundle import PREFIX, build_monai
from .cnn import SmallCNN, _norm
from .lenet import LeNet


def _monai_norm(norm: str) -> str:
    """MONAI nets are built with BatchNorm; ``group`` swaps it afterwards (see build_model)."""
    if norm in ("batch", "group"):
        return "batch"
    raise ValueError(f"norm: {norm!r} is not supported by MONAI networks (use 'batch' or 'group')")


class MinSize(nn.Module):
    """Upsample inputs smaller than ``size`` so deep pooling stacks keep at least one pixel.

    It is part of the model, so gradients (and attacks) flow through it unchanged.
    """

    def __init__(self, size: int, spatial_dims: int) -> None:
        super().__init__()
        self.size = size
        self.mode = "bilinear" if spatial_dims == 2 else "trilinear"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[2:]) >= self.size:
            return x
        scale = self.size / min(x.shape[2:])
        return F.interpolate(x, scale_factor=scale, mode=self.mode, align_corners=False)


def _densenet121(spatial_dims: int, in_channels: int, num_classes: int, norm: str) -> nn.Module:
    from monai.networks import nets  # imported on use: it costs seconds in every ClientApp process

    # DenseNet121 halves the resolution five times: 28x28 inputs are lifted to 32x32.
    net = nets.DenseNet121(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=num_classes,
        norm=_monai_norm(norm),
    )
    return nn.Sequential(MinSize(32, spatial_dims), net)


#: From this input size up, MONAI's own stems (7x7 stride-2 conv and max pooling) are used: at
#: 224 px the small stem costs about 40 times the compute for the same receptive field.
FULL_STEM_SIZE = 64


def _resnet(depth: int) -> Callable[..., nn.Module]:
    layers = {10: [1, 1, 1, 1], 18: [2, 2, 2, 2], 34: [3, 4, 6, 3]}[depth]

    def build(spatial_dims: int, in_channels: int, num_classes: int, norm: str, image_size: int = 28) -> nn.Module:
        from monai.networks import nets

        small = image_size < FULL_STEM_SIZE  # 28 px: a 3x3 stride-1 stem without pooling
        return nets.ResNet(
            block="basic",
            layers=layers,
            block_inplanes=[64, 128, 256, 512],
            spatial_dims=spatial_dims,
            n_input_channels=in_channels,
            conv1_t_size=3 if small else 7,
            conv1_t_stride=1 if small else 2,
            no_max_pool=small,
            num_classes=num_classes,
            norm=_monai_norm(norm),
        )

    return build


def _cnn(spatial_dims: int, in_channels: int, num_classes: int, norm: str) -> nn.Module:
    return SmallCNN(in_channels, num_classes, spatial_dims, norm)


def _lenet(spatial_dims: int, in_channels: int, num_classes: int, norm: str, image_size: int = 28) -> nn.Module:
    # tanh: it trains (the paper's sigmoid barely does) and leaks as much in inversion audits
    return LeNet(in_channels, num_classes, image_size=image_size, act="tanh")


MODELS: dict[str, Callable[[int, int, int, str], nn.Module]] = {
    "cnn": _cnn,
    "lenet": _lenet,
    "densenet121": _densenet121,
    "resnet10": _resnet(10),
    "resnet18": _resnet(18),
    "resnet34": _resnet(34),
}


def build_model(
    name: str,
    *,
    in_channels: int,
    num_classes: int,
    spatial_dims: int = 2,
    norm: str = "batch",
    image_size: int = 28,
    model_args: str = "",
) -> nn.Module:
    """Instantiate model ``name``; ``norm='group'`` gives a variant Opacus can train.

    ``image_size`` sizes ``lenet``'s head and chooses the ResNets' stem (see
    :data:`FULL_STEM_SIZE`). A ``name`` of the form ``package.module:factory`` is the user's
    own model (see :mod:`.custom`); ``monai:<Name>`` is a class of ``monai.networks.nets`` built
    with ``model_args`` exactly as described, ``norm`` aside (see :mod:`.bundle`).
    """
    if name.startswith(PREFIX):
        return build_monai(name, model_args, in_channels=in_channels, num_classes=num_classes,
                           spatial_dims=spatial_dims)
    if model_args:
        raise ValueError(f"model-args: needs model '{PREFIX}<Name>', not {name!r}")
    if ":" in name:
        from .custom import build_custom

        return build_custom(name, in_channels=in_channels, num_classes=num_classes, spatial_dims=spatial_dims,
                            norm=norm, image_size=image_size)
    if name not in MODELS:
        raise ValueError(f"model: unknown model {name!r}; choose one of {sorted(MODELS)} "
                         "or give your own as 'package.module:factory'")
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims: must be 2 or 3, got {spatial_dims}")
    if num_classes < 2:
        raise ValueError(f"num_classes: a classifier needs at least 2 classes, got {num_classes}")
    if name == "lenet" and (spatial_dims != 2 or norm != "none"):
        raise ValueError("model: 'lenet' is 2D and has no normalisation layers (use spatial_dims 2, norm 'none')")
    elif name == "cnn":
        _norm(norm, 8, spatial_dims)  # validate early
    elif name != "lenet":
        _monai_norm(norm)
    if name == "lenet":
        model = _lenet(spatial_dims, in_channels, num_classes, norm, image_size)
    elif name.startswith("resnet"):
        model = MODELS[name](spatial_dims, in_channels, num_classes, norm, image_size)
    else:
        model = MODELS[name](spatial_dims, in_channels, num_classes, norm)
    if norm == "group" and name not in ("cnn", "lenet"):
        # MONAI's ResNet blocks ignore ``norm``: Opacus' own fixer swaps every BatchNorm
        # for GroupNorm, which is what DP-SGD needs.
        from opacus.validators import ModuleValidator

        model = ModuleValidator.fix(model)
    return model
