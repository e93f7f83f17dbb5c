"""Read a dataset's shape so the server can build a matching model without seeing the data."""

from __future__ import annotations

from ..shared.data import load_site_data


def data_config(source: str) -> dict[str, int]:
    """Run-config keys (in-channels, spatial-dims, image-size, num-classes) for ``source``.

    Only used where the dataset is on the coordinating machine (simulation); a real
    consortium states them in the run config.
    """
    train = load_site_data(source, split="train")
    return {
        "in-channels": train.in_channels,
        "spatial-dims": train.spatial_dims,
        "image-size": int(train.images.shape[-1]),
        "num-classes": train.num_classes,
    }
