"""Defended systems of a defence comparison: the detector-gated router and the ensemble.

Sites send ``defence.transfer...`` (PGD-10 crafted on the standard member) and ``defence.adaptive...``
(PGD-10 through the whole system) counts, and how many inputs the router sent to its hardened model;
rows phases ``defence-transfer`` and ``defence-adaptive``, the system in the ``attack`` column.
"""

from __future__ import annotations

from .base import EPS_PATTERN, Key, KeySet
from .hardening import DefenceTable, table_keys, table_max_keys, table_params


class Defences(DefenceTable):
    name = "defences"
    phases = ("defence-transfer", "defence-adaptive")
    key_sets = (KeySet("defended-systems", (
        *table_keys("transfer|adaptive"),
        Key(rf"defence\.transfer\.routed(?:\.eps=(?P<eps>{EPS_PATTERN}))?\.routed-count", "count"),
    ), lambda cfg, train: not train and bool(cfg.defence_models), lambda cfg: 2 * table_max_keys(cfg),
        table_params),)
    title = "defended systems (all sites, PGD-10)"
    heading = "Defended systems"
    absent = ("This run did not compare defended systems: no transfer or adaptive results were stored "
              "(run config 'defence-models').")


FAMILY = Defences()
