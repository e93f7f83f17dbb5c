"""Preflight of a simulation: the coordinator's checks, then every simulated site's data.

The sites' share of the data is loaded and checked by the sites' own code
(:mod:`fedaegis.client.site`), run here before Ray starts, so a dataset a site would refuse
is one line naming it instead of a traceback per site per round. It lives in this layer
because the shared library's preflight (:mod:`fedaegis.shared.run.preflight`) must not import the
site's code.
"""

from __future__ import annotations

from ..shared.run.config import RunConfig
from ..shared.run.preflight import REQUIRED_SPLITS, Names, PreflightError, _one_line
from ..shared.run.preflight import preflight as coordinator_preflight


def check_site_data(cfg: RunConfig, num_sites: int, names: Names = Names()) -> None:
    """Every simulated site's share of every split is non-empty and fits the model (as the site checks it)."""
    from ..client.site import _load, _partitions, simulated_key, site_data  # the sites' own loading and checks
    from ..shared.data import DataValidationError

    if cfg.task != "classification":
        return
    try:
        for split in REQUIRED_SPLITS:
            data = _load(cfg.dataset, split, *simulated_key(cfg))
            if len(data) < num_sites:
                raise PreflightError(
                    f"{names('num-sites')} = {num_sites}: the {split} split of {cfg.dataset} holds only "
                    f"{len(data)} images, fewer than one per site")
            parts = _partitions(cfg.dataset, split, simulated_key(cfg), num_sites, cfg.partitioning,
                                cfg.dirichlet_alpha, cfg.seed)  # by patient where the data names them
            empty = [i for i, p in enumerate(parts) if len(p) == 0]
            if empty:
                raise PreflightError(f"{names('num-sites')} = {num_sites}: site {empty[0]} would get no {split} images "
                                     f"under {names('partitioning')} = {cfg.partitioning!r}")
        site_data(cfg, {"partition-id": 0, "num-partitions": num_sites})
    except DataValidationError as exc:
        raise PreflightError(f"{names('dataset')} {_one_line(names.rewrite(str(exc)))}") from None
    except ValueError as exc:
        if isinstance(exc, PreflightError):
            raise
        raise PreflightError(f"{names('dataset')} {cfg.dataset}: {_one_line(names.rewrite(str(exc)))}") from None


def preflight(cfg: RunConfig, num_sites: int | None, names: Names = Names(), *, database: bool = True) -> None:
    """Everything before a simulation starts: the database, the model, the simulated sites against the data.

    ``num_sites`` None (a deployment's SuperNodes, whose data the server never sees) skips the sites.
    """
    coordinator_preflight(cfg, num_sites, names, database=database)
    if num_sites is not None:
        check_site_data(cfg, num_sites, names)
