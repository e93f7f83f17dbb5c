"""The privacy-utility table: one row per defence, built from counts and sums."""

from __future__ import annotations

import math

import pytest

from fedaegis.shared.data import ImageSet
from fedaegis.shared.privacy import LeNet, format_table, privacy_utility_table, table_row
from privacy_fixtures import medmnist, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def test_row_is_derived_from_summed_counts():
    sums = {"num-examples": 200, "correct": 150, "inversion.psnr-sum": 60.0, "inversion.ssim-sum": 1.5,
            "inversion.images-count": 4}
    row = table_row("dp-sgd", 8.0, sums)
    assert (row.accuracy, row.psnr, row.ssim, row.epsilon) == (0.75, 15.0, 0.375, 8.0)
    assert row.as_dict()["defence"] == "dp-sgd"


def test_table_compares_defences_on_real_data():
    data, test = medmnist("pneumoniamnist", "train"), medmnist("pneumoniamnist", "test")
    train = ImageSet(data.images[:1000], data.labels[:1000], 2, "site")
    audit_x, audit_y = data.images[2000:2001], data.labels[2000:2001]
    rows = privacy_utility_table(train, test, audit_x, audit_y, model_fn=lambda: LeNet(act="tanh"),
                                 epochs=3, lr=3e-3, target_epsilon=8.0, iterations=200, psgl_cut=4)
    by = {r.defence: r for r in rows}
    assert list(by) == ["none", "dp-sgd", "pruning", "psgl"]
    assert math.isinf(by["none"].epsilon) and math.isinf(by["pruning"].epsilon) and math.isinf(by["psgl"].epsilon)
    assert 0 < by["dp-sgd"].epsilon <= 8.0 + 1e-6
    assert all(0 <= r.accuracy <= 1 and -1 <= r.ssim <= 1 for r in rows)
    assert by["none"].accuracy > 0.7
    assert by["none"].psnr > 20
    assert by["dp-sgd"].psnr < 12
    assert by["pruning"].psnr < by["none"].psnr and by["psgl"].psnr < by["none"].psnr
    print("\n" + format_table(rows))
    with pytest.raises(ValueError, match="defences"):
        privacy_utility_table(train, test, audit_x, audit_y, model_fn=LeNet, defences=["secure-aggregation"])
