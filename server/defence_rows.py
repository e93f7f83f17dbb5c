"""Database rows of a defence comparison: the hardening table, the defended systems, detection AUCs.

From the evaluate counts summed over the sites (see :mod:`fedaegis.shared.defence_report`
and :mod:`fedaegis.shared.detection.roc`):

* phase ``hardening``: one row set per member (``attack`` = method, ``none`` the standard
  model) and eps, PGD-10 on the member itself;
* phases ``defence-transfer`` and ``defence-adaptive``: the router (``routed``), the
  ensemble and, for transfer, the members it is built from, per eps;
  names ``clean-accuracy``, ``robust-accuracy``, ``n-count`` (and for the router
  ``clean-routed-fraction``, ``adv-routed-fraction``);
* phase ``detection``: ``roc-auc`` of the pooled binned histograms, ``clean-count``
  and ``adv-count`` (``attack`` = detector).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from ..shared.defence_report import derive
from ..shared.store import MetricValue


def defence_rows(metrics: Mapping[str, float]) -> list[MetricValue]:
    rows = [MetricValue(cell["phase"], name, float(value), attack=cell["system"], epsilon=cell["epsilon"])  # type: ignore[arg-type]
            for cell in derive(metrics) for name, value in cell["values"].items()]  # type: ignore[attr-defined]
    if any(k.startswith("detector.") for k in metrics):
        from ..shared.detection import decode_histograms
        from ..shared.detection.roc import binned_auc

        for (detector, eps), (clean, adv) in sorted(decode_histograms(metrics).items()):
            auc = binned_auc(clean, adv)
            rows += [MetricValue("detection", "clean-count", float(clean.sum()), attack=detector, epsilon=eps),
                     MetricValue("detection", "adv-count", float(adv.sum()), attack=detector, epsilon=eps)]
            if not math.isnan(auc):
                rows.append(MetricValue("detection", "roc-auc", auc, attack=detector, epsilon=eps))
    return rows
