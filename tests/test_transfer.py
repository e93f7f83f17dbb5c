"""Transfer matrix on real BloodMNIST: white-box examples fool most, transferred ones fewer."""

from __future__ import annotations

from hardening_fixtures import EPS, blood, single_thread, standard

from fedaegis.shared.reply.protocol import check_metrics
from fedaegis.shared.attacks.transfer import transfer_matrix, transfer_rates


def test_transfer_matrix_counts_and_white_box_dominates() -> None:
    data = blood()
    models = {"cnn16": standard(16), "cnn32": standard(32)}
    with single_thread():
        counts = transfer_matrix(models, (data.x_test[:200], data.y_test[:200]), [EPS], steps=5)
    assert check_metrics(counts) == []
    (rates,) = transfer_rates(counts).values()
    print("\nPGD-5 at 8/255 transfer success (source, target):", {k: round(v, 3) for k, v in rates.items()})
    for tgt in models:
        assert counts[f"transfer.{tgt}.clean-correct"] > 100
        for src in models:
            assert 0 <= counts[f"transfer.{src}.{tgt}.eps={EPS:.6g}.fooled-count"] <= counts[
                f"transfer.{tgt}.clean-correct"]
        other = next(s for s in models if s != tgt)
        assert rates[(tgt, tgt)] > rates[(other, tgt)] > 0.05  # white-box strongest, yet attacks carry over
