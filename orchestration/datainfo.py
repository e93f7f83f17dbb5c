"""Read a dataset's shape so the server can build a matching model without seeing the data."""

from __future__ import annotations


def data_config(source: str, num_classes: int | None = None) -> dict[str, int]:
    """Run-config keys (in-channels, spatial-dims, image-size, num-classes) for ``source``.

    Every split is checked and classes are inferred by the preflight's one rule
    (:func:`fedaegis.shared.run.preflight.dataset_facts`). Only used where the dataset is on the
    coordinating machine (simulation); a real consortium states them in the run config.
    """
    from ..shared.run.preflight import dataset_facts

    return dataset_facts(source, num_classes).run_config()
