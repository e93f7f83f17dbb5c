"""Combine the sites' counts and sums into federation-wide metrics.

Sites report sums (correct, loss-sum) and counts (num-examples); adding them and
dividing once gives exactly the n-weighted mean, with no per-site ratio ever needed.
"""

from __future__ import annotations

from flwr.app import MetricRecord, RecordDict

from ..shared.reply.protocol import METRICS_KEY
from ..shared.results import ratios

# derived ratio -> (numerator, denominator), declared by each metric family; added when both are present.
RATIOS = ratios()


def sum_metric_records(records: list[RecordDict], weighted_by_key: str) -> MetricRecord:
    """Totals of every count/sum over the replies, plus the derived ratios.

    Matches Flower's ``*_metrics_aggr_fn`` signature, so any Flower strategy can use it.
    """
    totals: dict[str, float] = {}
    withheld = 0.0
    for content in records:
        metrics = dict(content[METRICS_KEY])
        withheld += withheld_examples(metrics)  # type: ignore[arg-type]
        for name, value in metrics.items():
            totals[name] = totals.get(name, 0) + value  # type: ignore[operator]
    return MetricRecord({**totals, **derived_ratios(totals, withheld)})


def withheld_examples(metrics: dict[str, float]) -> float:
    """Examples a suppressed reply still counts (a training reply keeps its FedAvg weight) but reports nothing on."""
    return float(metrics.get("num-examples", 0)) if metrics.get("suppressed-count") else 0.0


def derived_ratios(totals: dict[str, float], withheld: float = 0.0) -> dict[str, float]:
    """Ratios of summed counts; ``withheld`` examples (see :func:`withheld_examples`) count in no ratio.

    A ratio whose every example was withheld is left out, never reported as 0.
    """
    out = {}
    # under the sites' DP, sums without a known bound (losses, PSNR) are withheld as 0: no ratio
    dp_withheld = totals.get("dp.epsilon-sum", 0) > 0
    for name, (num, den) in RATIOS.items():
        if dp_withheld and num.endswith("-sum") and totals.get(num) == 0:
            continue
        reported = totals.get(den, 0) - (withheld if den == "num-examples" else 0)
        if num in totals and reported > 0:
            out[name] = float(totals[num]) / float(reported)
    return out
