"""Loss landscape: the federation's mean loss on a grid of two adversarial directions (Ma et al., Figure 1).

With run config ``landscape = true`` each site evaluates, in the rounds its attacks run, the
global model (or, in a defence comparison, each member) on a ``landscape-points`` square grid
``x + e1 * sign(grad) + e2 * d2`` (``d2`` a random sign direction orthogonal to the gradient's
sign, ``e1, e2`` from 0 to the largest of ``epsilons``) and sends per cell
``landscape.<model>.i<i>.j<j>.loss-sum`` (each image's cross-entropy clipped to
``[0, LOSS_BOUND]``), ``...correct`` and ``...n-count``. The server sums them and stores, per
model and cell, ``i<i>.j<j>.mean-loss``, ``...accuracy`` and ``...n-count`` (phase
``landscape``, the model in the ``attack`` column, the grid's extent in ``epsilon``);
federation-wide only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .base import NAME_PATTERN, Column, Family, Key, KeySet, RoundTotals

if TYPE_CHECKING:
    from ..run.config import RunConfig
    from .base import MetricValue

PREFIX = "landscape"
# each image's cross-entropy is clipped to [0, LOSS_BOUND] nats before it is summed: a released sum needs a
# per-sample bound (the schema checks it, metric DP scales its noise by it). 20 nats (true class below 2e-9)
# rarely binds: the trained PneumoniaMNIST CNN of tests/attack_fixtures.py at 8/255 along the gradient's sign
# has 23% of its images above 10 nats, none above 17.7 (a bound of 10 would cut that cell's mean 6.29 to 5.66)
LOSS_BOUND = 20.0
GLOBAL = "global"  # the model label of a run without a defence comparison
_CELL = rf"{PREFIX}\.(?P<model>{NAME_PATTERN})\.i(?P<i>[0-9]+)\.j(?P<j>[0-9]+)"
_WIRE = re.compile(rf"^{_CELL}\.(?P<field>loss-sum|correct|n-count)$")
_STORED = re.compile(r"^i(?P<i>[0-9]+)\.j(?P<j>[0-9]+)\.(?P<field>mean-loss|accuracy|n-count)$")

Cells = dict[tuple[int, int], dict[str, float]]


def cell_key(model: str, i: int, j: int, field: str) -> str:
    """The wire name of one grid cell's field (``loss-sum``, ``correct`` or ``n-count``)."""
    return f"{PREFIX}.{model}.i{i}.j{j}.{field}"


def models(cfg: RunConfig) -> tuple[str, ...]:
    """The models a site evaluates: each defence member in a comparison, else the global model."""
    return cfg.defence_model_names if cfg.defence_models else (GLOBAL,)


def decode(metrics: Mapping[str, float]) -> dict[str, Cells]:
    """Summed (or one site's) metrics -> ``{model: {(i, j): {field: value}}}``; other keys ignored."""
    out: dict[str, Cells] = {}
    for key, value in metrics.items():
        m = _WIRE.match(key)
        if m:
            out.setdefault(m["model"], {}).setdefault((int(m["i"]), int(m["j"])), {})[m["field"]] = float(value)
    return out


def _grid(cells: Mapping[tuple[int, int], Mapping[str, Any]], field: str) -> list[list[float | None]]:
    """A square grid of one field, rows i (gradient sign), columns j (second direction); None where missing."""
    n = max(max(i, j) for i, j in cells) + 1
    grid: list[list[float | None]] = [[None] * n for _ in range(n)]
    for (i, j), c in cells.items():
        v = c.get(field)
        grid[i][j] = None if v is None or not math.isfinite(v) else float(v)
    return grid


def _order(label: str) -> tuple[bool, bool, str]:
    return (label != GLOBAL, label != "none", label)


class Landscape(Family):
    name = "landscape"
    phases = ("landscape",)
    qualifier = "model"
    claims = (f"{PREFIX}.",)
    key_sets = (KeySet("landscape", (
        Key(rf"{_CELL}\.n-count", "size", size=".n-count"),
        Key(rf"{_CELL}\.correct", "count", size=".n-count"),
        Key(rf"{_CELL}\.loss-sum", "sum", bound=LOSS_BOUND, size=".n-count"),
    ), lambda cfg, train: not train and cfg.landscape,
        # three values a cell, and the suppression flag cell suppression adds to each
        lambda cfg: 4 * cfg.landscape_points ** 2 * len(models(cfg)),
        lambda cfg: {"model": set(models(cfg)), "i": {str(k) for k in range(cfg.landscape_points)},
                     "j": {str(k) for k in range(cfg.landscape_points)}}),)
    title = "loss landscape (all sites, mean clipped cross-entropy; rows: sign of the gradient, columns: random)"
    absent = ("This run did not evaluate a loss landscape: no landscape results were stored "
              "(run config 'landscape').")
    columns = (Column("model", "model", "text"), Column("eps max", "epsilon", "eps"),
               Column("loss (0,0)", "clean_loss"), Column("loss (eps,0)", "gradient_loss"),
               Column("loss (0,eps)", "second_loss"), Column("loss (eps,eps)", "corner_loss"),
               Column("acc (0,0)", "clean_accuracy"), Column("acc (eps,0)", "gradient_accuracy"),
               Column("n", "n_count", ".0f"))

    def rows(self, totals: RoundTotals) -> list[MetricValue]:
        if totals.evaluate is None:
            return []
        eps = totals.cfg.landscape_eps
        rows = []
        for model, cells in sorted(decode(totals.evaluate).items()):
            for (i, j), c in sorted(cells.items()):
                n = c.get("n-count", 0.0)
                rows.append(self.row("landscape", f"i{i}.j{j}.n-count", n, model, eps))
                if n > 0:
                    rows += [self.row("landscape", f"i{i}.j{j}.mean-loss", c.get("loss-sum", 0.0) / n, model, eps),
                             self.row("landscape", f"i{i}.j{j}.accuracy", c.get("correct", 0.0) / n, model, eps)]
        return rows

    def cells(self, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """One cell per model: its grids (``loss_grid``, ``accuracy_grid``) and their corners for ``show``."""
        by_model: dict[str, dict[tuple[int, int], dict[str, float]]] = {}
        extent: dict[str, float | None] = {}
        for row in rows:
            m = _STORED.match(row["name"])
            if m:
                by_model.setdefault(row["attack"], {}).setdefault((int(m["i"]), int(m["j"])), {})[m["field"]] = \
                    float(row["value"])
                extent[row["attack"]] = row["epsilon"]
        out = []
        for model in sorted(by_model, key=_order):
            loss, acc = _grid(by_model[model], "mean-loss"), _grid(by_model[model], "accuracy")
            n, last = _grid(by_model[model], "n-count"), len(loss) - 1
            out.append({"model": model, "epsilon": extent[model], "points": last + 1, "loss_grid": loss,
                        "accuracy_grid": acc, "clean_loss": loss[0][0], "gradient_loss": loss[last][0],
                        "second_loss": loss[0][last], "corner_loss": loss[last][last],
                        "clean_accuracy": acc[0][0], "gradient_accuracy": acc[last][0], "n_count": n[0][0]})
        return out


FAMILY = Landscape()
