from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedaegis.server.aggregation import sum_metric_records
from fedaegis.shared.reply.protocol import check_reply, is_aggregate_name


def test_aggregate_reply_passes():
    content = RecordDict({"metrics": MetricRecord({"num-examples": 10, "correct": 7, "loss-sum": 3.2, "skipped": 0})})
    assert check_reply(content, is_train=False) == []


def test_per_sample_values_are_refused():
    leaky = RecordDict({"metrics": MetricRecord({"num-examples": 3, "predictions": [0, 1, 1]})})
    problems = check_reply(leaky, is_train=False)
    assert any("predictions" in p for p in problems)
    named = RecordDict({"metrics": MetricRecord({"num-examples": 3, "patient-7-prob": 0.9})})
    assert any("not a count or sum" in p for p in check_reply(named, is_train=False))
    config = RecordDict({"metrics": MetricRecord({"num-examples": 1}), "labels": ConfigRecord({"y": [1, 0]})})
    assert any("labels" in p for p in check_reply(config, is_train=False))


def test_arrays_only_in_train_replies_with_model_shapes():
    import numpy as np

    arrays = ArrayRecord([np.zeros((2, 3))])
    shapes = {k: tuple(a.shape) for k, a in arrays.items()}
    ok = RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": 4})})
    assert check_reply(ok, is_train=True, expected_arrays=shapes) == []
    assert check_reply(ok, is_train=False) != []  # evaluate replies carry no arrays
    images = ArrayRecord([np.zeros((4, 1, 28, 28))])
    smuggled = RecordDict({"arrays": images, "metrics": MetricRecord({"num-examples": 4})})
    assert check_reply(smuggled, is_train=True, expected_arrays=shapes) != []


def test_names():
    assert is_aggregate_name("attack.pgd.eps=0.0039.robust-correct")
    assert not is_aggregate_name("accuracy")


def test_sum_aggregation_is_n_weighted():
    replies = [
        RecordDict({"metrics": MetricRecord({"num-examples": 10, "correct": 9, "loss-sum": 1.0})}),
        RecordDict({"metrics": MetricRecord({"num-examples": 30, "correct": 15, "loss-sum": 9.0})}),
    ]
    agg = sum_metric_records(replies, "num-examples")
    assert agg["num-examples"] == 40 and agg["correct"] == 24
    assert agg["accuracy"] == 24 / 40 and agg["loss"] == 10 / 40


def test_small_cells_are_zeroed_and_marked():
    from fedaegis.shared.reply.protocol import check_metrics, suppress_small_cells

    metrics = {"num-examples": 40, "correct": 30, "loss-sum": 9.5,
               "attack.pgd.eps=0.0314.n-count": 6, "attack.pgd.eps=0.0314.robust-correct": 2}
    out = suppress_small_cells(metrics, 10)
    assert out["correct"] == 30 and out["suppressed-count"] == 0
    assert out["attack.pgd.eps=0.0314.robust-correct"] == 0 and out["attack.pgd.eps=0.0314.n-count"] == 0
    assert out["attack.pgd.eps=0.0314.suppressed-count"] == 1
    assert check_metrics(out) == []
    small = suppress_small_cells({"num-examples": 7, "train-correct": 5}, 10, keep=("num-examples",))
    assert small == {"num-examples": 7, "train-correct": 0, "suppressed-count": 1}
    assert suppress_small_cells(metrics, 0) == metrics


def test_group_sizes_come_from_the_families_declarations():
    """Every size a family declares sizes its group for cell suppression (no list kept apart)."""
    from fedaegis.shared.reply.protocol import SIZE_LEAVES, SIZE_NAMES, suppress_small_cells
    from fedaegis.shared.results import FAMILIES

    for family in FAMILIES:
        for key_set in family.key_sets:
            for key in key_set.keys:
                assert key.size.lstrip(".") in (SIZE_LEAVES if key.size.startswith(".") else SIZE_NAMES), key
    # segmentation training on 3 samples at a site with 50 test images: its own group is small
    metrics = {"num-examples": 50, "correct": 40, "seg.train.samples-count": 3, "seg.train.steps-count": 2,
               "seg.volumes-count": 5, "inversion.images-count": 2, "inversion.psnr-sum": 30.5}
    out = suppress_small_cells(metrics, 10)
    assert out["seg.train.suppressed-count"] == 1 and out["seg.train.steps-count"] == 0
    assert out["inversion.suppressed-count"] == 1 and out["inversion.psnr-sum"] == 0
    assert out["seg.suppressed-count"] == 0 and out["seg.volumes-count"] == 5  # sized by num-examples
    assert out["correct"] == 40
