"""Split one labelled dataset among simulated sites: IID, label skew, or quantity skew.

Non-IID splits are what make federated robustness results meaningful; they follow the usual
benchmark recipes (Hsu et al. 2019; Li et al., NIID-Bench, ICDE 2022) and are deterministic
for a given seed so that runs can be repeated and compared.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

Scheme = Literal["iid", "dirichlet", "quantity"]
SCHEMES = ("iid", "dirichlet", "quantity")
MAX_RETRIES = 1000


def partition_indices(
    labels: np.ndarray,
    num_partitions: int,
    scheme: Scheme = "iid",
    *,
    alpha: float = 0.5,
    seed: int = 0,
    min_size: int = 1,
) -> list[np.ndarray]:
    """Disjoint index arrays (sorted, int64), one per partition, whose union is every sample.

    - ``"iid"``: shuffle and split into near-equal parts.
    - ``"dirichlet"``: label skew; per class, the share each partition gets is drawn from
      Dir(alpha); small alpha -> each site sees few classes. Partitions already holding their
      fair share get no more of a class (NIID-Bench), and draws repeat until every partition
      has ``min_size`` samples.
    - ``"quantity"``: partition sizes drawn from Dir(alpha), labels IID within them.
    """
    labels = np.asarray(labels)
    _validate(labels, num_partitions, scheme, alpha, min_size)
    rng = np.random.default_rng(seed)
    n = labels.shape[0]
    if scheme == "iid":
        parts = np.array_split(rng.permutation(n), num_partitions)
    elif scheme == "dirichlet":
        parts = _dirichlet(labels, num_partitions, alpha, min_size, rng)
    else:
        parts = _quantity(n, num_partitions, alpha, min_size, rng)
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def _validate(
    labels: np.ndarray, num_partitions: int, scheme: str, alpha: float, min_size: int
) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"scheme: unknown {scheme!r}; expected one of {SCHEMES}")
    if labels.ndim != 1:
        raise ValueError(f"labels: expected a 1-D array, got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels: expected integer class labels, got dtype {labels.dtype}")
    n = labels.shape[0]
    if isinstance(num_partitions, bool) or not isinstance(num_partitions, (int, np.integer)):
        raise ValueError(f"num_partitions: expected an int, got {num_partitions!r}")
    if num_partitions < 1:
        raise ValueError(f"num_partitions: must be >= 1, got {num_partitions}")
    if num_partitions > n:
        raise ValueError(f"num_partitions: {num_partitions} exceeds the number of samples ({n})")
    if not np.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha: must be a finite number > 0, got {alpha}")
    if min_size < 0:
        raise ValueError(f"min_size: must be >= 0, got {min_size}")
    if min_size * num_partitions > n:
        raise ValueError(
            f"min_size: {min_size} x {num_partitions} partitions exceeds the {n} samples"
        )


def _dirichlet(
    labels: np.ndarray, k: int, alpha: float, min_size: int, rng: np.random.Generator
) -> list[list[int]]:
    n = labels.shape[0]
    classes = np.unique(labels)
    for _ in range(MAX_RETRIES):
        parts: list[list[int]] = [[] for _ in range(k)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            shares = rng.dirichlet(np.full(k, alpha))
            shares *= np.array([len(p) < n / k for p in parts])  # full partitions get none
            if shares.sum() == 0:
                shares = np.full(k, 1.0 / k)
            cuts = (np.cumsum(shares / shares.sum()) * len(idx)).astype(int)[:-1]
            for part, chunk in zip(parts, np.split(idx, cuts), strict=True):
                part.extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return parts
    raise ValueError(
        f"alpha/min_size: no Dirichlet(alpha={alpha}) split gave every one of {k} partitions "
        f"at least min_size={min_size} samples in {MAX_RETRIES} draws; raise alpha, lower "
        "min_size or use fewer partitions"
    )


def _quantity(
    n: int, k: int, alpha: float, min_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    order = rng.permutation(n)
    for _ in range(MAX_RETRIES):
        shares = rng.dirichlet(np.full(k, alpha))
        cuts = (np.cumsum(shares) * n).astype(int)[:-1]
        parts = np.split(order, cuts)
        if min(len(p) for p in parts) >= min_size:
            return parts
    raise ValueError(
        f"alpha/min_size: no Dirichlet(alpha={alpha}) size draw gave every one of {k} "
        f"partitions at least min_size={min_size} samples in {MAX_RETRIES} draws; raise alpha "
        "or lower min_size"
    )


def by_group(
    labels: np.ndarray, groups: tuple[str, ...] | list[str], split: Callable[[np.ndarray], list[np.ndarray]]
) -> list[np.ndarray]:
    """Apply ``split`` (labels -> index arrays) to whole groups (patients): no group is cut in two.

    Each group counts once, with the label of its first sample; the result holds sample indices.
    """
    labels = np.asarray(labels)
    names, first, inverse = np.unique(np.asarray(groups, dtype=object).astype(str), return_index=True,
                                      return_inverse=True)
    parts = split(labels[first])
    return [np.sort(np.flatnonzero(np.isin(inverse, part))).astype(np.int64) for part in parts]
