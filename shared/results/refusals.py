"""Refusals: requests a site's own policy turned down, per site and round, and their count per policy field.

Nothing of a refusal is data: a site answers with a fixed code and the policy field
(:mod:`fedaegis.shared.site.policy`). Rows phase ``refusal``, named by the policy field; a site's
row holds the refused request (``train``/``evaluate``) in the ``attack`` column.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Column, Family, RoundTotals

if TYPE_CHECKING:
    from .base import MetricValue


class Refusals(Family):
    name = "refusals"
    phases = ("refusal",)
    qualifier = "request"
    title = "requests refused by the sites' policies"
    columns = (Column("site", "site", "text"), Column("request", "request", "text"),
               Column("policy field", "field", "text"))

    def rows(self, totals: RoundTotals) -> list[MetricValue]:
        fields = [f for _, _, f in totals.refusals]
        return [self.row("refusal", f, float(fields.count(f))) for f in sorted(set(fields))]

    def site_rows(self, totals: RoundTotals) -> dict[str, list[MetricValue]]:
        out: dict[str, list[MetricValue]] = {}
        for node, phase, policy_field in totals.refusals:
            out.setdefault(node, []).append(self.row("refusal", policy_field, 1.0, phase))
        return out


FAMILY = Refusals()
