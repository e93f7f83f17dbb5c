"""Partitioning one dataset among simulated sites: IID, Dirichlet label skew, quantity skew."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedaegis.shared.data import partition_indices

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LABELS = np.repeat(np.arange(10), 100)  # 1000 samples, 10 balanced classes
SCHEMES = ("iid", "dirichlet", "quantity")


def max_class_share(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    """Mean over partitions of the share of the partition's most common class."""
    return float(np.mean([np.bincount(labels[p]).max() / len(p) for p in parts]))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_disjoint_cover_and_deterministic(scheme: str) -> None:
    parts = partition_indices(LABELS, 7, scheme, alpha=0.5, seed=11)
    joined = np.concatenate(parts)
    assert len(parts) == 7 and all(p.dtype == np.int64 and len(p) >= 1 for p in parts)
    assert np.array_equal(np.sort(joined), np.arange(len(LABELS)))  # disjoint and complete
    again = partition_indices(LABELS, 7, scheme, alpha=0.5, seed=11)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = partition_indices(LABELS, 7, scheme, alpha=0.5, seed=12)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_iid_is_balanced() -> None:
    parts = partition_indices(LABELS, 4, "iid", seed=0)
    assert [len(p) for p in parts] == [250] * 4
    assert max_class_share(LABELS, parts) < 0.2  # ~0.1 expected for 10 classes


def test_dirichlet_small_alpha_skews_labels() -> None:
    iid = max_class_share(LABELS, partition_indices(LABELS, 5, "iid", seed=0))
    skewed = max_class_share(LABELS, partition_indices(LABELS, 5, "dirichlet", alpha=0.1, seed=0))
    mild = max_class_share(LABELS, partition_indices(LABELS, 5, "dirichlet", alpha=100, seed=0))
    assert skewed > 2.5 * iid
    assert mild < 0.2  # large alpha is close to IID


def test_dirichlet_respects_min_size() -> None:
    parts = partition_indices(LABELS, 10, "dirichlet", alpha=0.05, seed=3, min_size=20)
    assert min(len(p) for p in parts) >= 20


def test_dirichlet_on_real_bloodmnist_labels() -> None:
    path = DATA / "bloodmnist" / "bloodmnist.npz"
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    with np.load(path) as f:
        labels = f["val_labels"].ravel().astype(np.int64)
    parts = partition_indices(labels, 4, "dirichlet", alpha=0.2, seed=0, min_size=10)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(labels)))
    assert max_class_share(labels, parts) > 1.5 * max_class_share(
        labels, partition_indices(labels, 4, "iid", seed=0)
    )


def test_quantity_skew_gives_unequal_sizes_with_iid_labels() -> None:
    parts = partition_indices(LABELS, 5, "quantity", alpha=0.3, seed=0, min_size=5)
    sizes = sorted(len(p) for p in parts)
    assert sizes[-1] > 3 * sizes[0] and sizes[0] >= 5
    big = max(parts, key=len)
    assert np.bincount(LABELS[big]).max() / len(big) < 0.25  # labels stay mixed


def test_single_partition_is_everything() -> None:
    (only,) = partition_indices(LABELS, 1, "dirichlet")
    assert np.array_equal(only, np.arange(len(LABELS)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_partitions": 0}, "num_partitions: must be >= 1"),
        ({"num_partitions": 1001}, "num_partitions: 1001 exceeds"),
        ({"num_partitions": 2.5}, "num_partitions: expected an int"),
        ({"alpha": 0.0}, "alpha: must be"),
        ({"alpha": -1.0}, "alpha: must be"),
        ({"scheme": "pathological"}, "scheme: unknown 'pathological'"),
        ({"min_size": 600}, "min_size: 600 x 2"),
        ({"min_size": -1}, "min_size: must be >= 0"),
    ],
)
def test_invalid_arguments(kwargs: dict, message: str) -> None:
    args = {"num_partitions": 2, "scheme": "dirichlet", **kwargs}
    with pytest.raises(ValueError, match=message):
        partition_indices(
            LABELS, args.pop("num_partitions"), args.pop("scheme"), **args
        )


def test_bad_labels() -> None:
    with pytest.raises(ValueError, match="labels: expected a 1-D"):
        partition_indices(LABELS.reshape(-1, 1), 2, "iid")
    with pytest.raises(ValueError, match="labels: expected integer"):
        partition_indices(LABELS.astype(np.float32), 2, "iid")


def test_impossible_min_size_fails_clearly() -> None:
    labels = np.repeat(np.arange(2), 10)  # 4 x 5 fits, but Dir(1e-4) never splits evenly
    with pytest.raises(ValueError, match="min_size=5 .* draws"):
        partition_indices(labels, 4, "quantity", alpha=1e-4, seed=0, min_size=5)
