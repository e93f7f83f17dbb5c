"""What ``fedaegis report RUN`` says about a stored run, as plain JSON-able data.

The HTML is a single file that opens anywhere, offline: CSS is inline, plots are
matplotlib PNGs (Agg canvas, no display needed) embedded as base64 ``data:`` URIs, and
there is no script and no external URL. Every piece of text from the database is escaped.
The JSON form (``--format json``) holds exactly the same content, without the images:
both are rendered from :func:`build_report`.

Sections, in order: metrics per round; robustness; hardening trade-off; then each metric family
that declares a report section of its own (segmentation, transfer attacks, defended systems, detection: their
columns, the same ``show`` prints); the loss landscape (surface and contour per model); backdoor;
inversion audit; privacy budget; then the run and its configuration (results first). Several runs,
or a sweep, make a comparison instead (:mod:`.report_compare`). A section whose rows the run did
not record says so plainly (``"measured": false`` and a ``note`` in JSON) instead of
disappearing, so a reader can tell "not measured" from "measured and fine".

Where the numbers come from: :meth:`fedaegis.shared.store.RunStore.get_run`, read through the
query layer :mod:`fedaegis.shared.results.query` (the one ``show`` reads too). Only the
federation-wide rows of a round (``metric_rows``, no site) are reported, except for the
privacy budget and refusals, whose per-site rows are shown when there are any. Each metric row is
``(family, phase, name, value, attack, epsilon)``; each family's module in
:mod:`fedaegis.shared.results` documents its rows; in short, per phase:

``train`` / ``evaluate``
    ``round["metrics"]``: ``evaluate.accuracy``, ``evaluate.loss``,
    ``evaluate.num-examples``, ``train.train-accuracy``, ``train.train-loss``.

``attack`` (written by the server, see :mod:`fedaegis.shared.results.robustness`)
    ``attack`` = attack label, ``epsilon`` = budget (L-inf, images in [0, 1]); names
    ``robust-accuracy``, ``clean-accuracy``, ``success-rate``, ``mean-linf``,
    ``mean-l2``, ``mean-queries``, ``n-count``. The curves use the last round with
    attack rows.

``hardening`` (adversarial training and other defences compared in one run)
    ``attack`` = the hardening method's label (e.g. ``none`` for the undefended
    baseline, ``pgd-at``, ``trades``); ``clean-accuracy`` rows have ``epsilon`` NULL
    (a row with an epsilon is accepted too and applies to that epsilon only);
    ``robust-accuracy`` rows have ``epsilon`` = the budget of the evaluating attack
    (the run's attack suite; a method may be evaluated at several budgets). The
    trade-off uses the last round with hardening rows; when a method labelled ``none``
    exists, each method's clean-accuracy cost is shown relative to it.

``landscape`` (see :mod:`fedaegis.shared.results.landscape`)
    ``attack`` = the model (``global``, or a defence member such as ``none``/``pgd-at``),
    ``epsilon`` = the grid's extent on both axes; names ``i<i>.j<j>.mean-loss``,
    ``i<i>.j<j>.accuracy`` and ``i<i>.j<j>.n-count`` (row ``i``: along the sign of the input
    gradient, column ``j``: along the random orthogonal direction, each from 0 to ``epsilon``).
    The surfaces use the last round with landscape rows.

``backdoor`` (poisoning by a malicious site)
    ``attack`` = backdoor attack label (e.g. ``badnets``; may be empty);
    ``attack-success-rate`` (share of triggered non-target test images classified as
    the target) and ``main-accuracy`` (clean test accuracy of the same model), per
    round. ``epsilon`` is unused.

``inversion`` (gradient-inversion audit, see :mod:`fedaegis.shared.privacy.inversion`)
    ``attack`` = the defence the update went through (``none``, ``dp-sgd``,
    ``prune-0.9``, ...); ``psnr`` (dB) and ``ssim`` as means, or the wire form
    ``psnr-sum``, ``ssim-sum`` and ``images-count`` from which the means are derived.
    Lower is better (less of the images was recovered).

``privacy`` (differential-privacy accounting)
    ``epsilon-spent``: cumulative epsilon spent up to and including the round (the
    federation-wide row, site NULL, is the guarantee for the federation: the worst case over
    sites when they account separately; per-site rows are optional),
    optional ``delta`` and ``epsilon-budget``. Secure aggregation is on when the run
    config key ``secure-aggregation`` is true (or ``"on"``/a protocol name) or any
    round has a privacy row ``secure-aggregation`` = 1. With secure aggregation the
    server only ever sees the sum of the sites' updates, so a per-site breakdown is
    unavailable by design and is not shown even if rows exist.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from ..shared.results import BY_NAME, FAMILIES, query
from .options import JSON_SCHEMA

REPORT_FORMAT = "fedaegis-run-report"
REPORT_VERSION = 1

ATTACK_FIELDS = ("clean-accuracy", "robust-accuracy", "success-rate", "mean-linf", "mean-l2",
                 "mean-queries", "n-count")
# families the report shows in a section of their own, as their columns declare (the others have bespoke ones)
FAMILY_SECTIONS = tuple(f for f in FAMILIES if f.heading)
SECURE_AGG_KEYS = ("secure-aggregation",)
# the run-config keys of the privacy section (shared/run/config.py)
PRIVACY_CONFIG_KEYS = ("secure-aggregation", "secure-aggregation-train", "metric-dp", "metric-epsilon",
                       "metric-delta", "metric-epsilon-budget", "dp-epsilon", "dp-delta", "dp-max-grad-norm")

NOT_MEASURED = {
    "rounds": "This run recorded no completed round, so there are no metrics per round.",
    "robustness": "This run did not measure adversarial robustness: no attack results were stored "
                  "(the run's attack suite was empty).",
    "hardening": "This run did not measure a hardening trade-off: no hardening results were stored.",
    "backdoor": "This run did not measure backdoor attacks: no backdoor results were stored.",
    "inversion": "This run did not run a gradient-inversion audit: no inversion results were stored.",
    "privacy": "This run did not account a differential-privacy budget: no privacy rows were stored.",
}



# -- content ------------------------------------------------------------------------------
def _key(name: str) -> str:
    return name.replace("-", "_")


_num = query.number  # a finite float, or None (NaN/inf are not valid JSON and mean 'not available')


def _rows(rnd: Mapping[str, Any], family: str) -> list[Mapping[str, Any]]:
    """The federation-wide rows of one metric family in a round."""
    return query.rows(rnd, family)


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off", "none")
    return bool(value)


def _by_label(label: str) -> tuple[bool, str]:
    """Sort order of methods/defences: the undefended baseline ``none`` first."""
    return (label != "none", label)


def _round_metrics(run: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for r in run["rounds"]:
        m = r["metrics"]
        out.append({
            "round": r["number"],
            "accuracy": _num(m.get("evaluate.accuracy")),
            "loss": _num(m.get("evaluate.loss")),
            "train_accuracy": _num(m.get("train.train-accuracy")),
            "train_loss": _num(m.get("train.train-loss")),
            "num_examples": _num(m.get("evaluate.num-examples")),
            "train_replies": r.get("train_replies"),
            "evaluate_replies": r.get("evaluate_replies"),
            "failures": r.get("failures"),
        })
    return out


def _attack_cells(rnd: Mapping[str, Any]) -> list[dict[str, Any]]:
    cells = []
    for c in query.cells(rnd, "attacks"):
        if c["epsilon"] is None:
            continue
        cell = {"round": rnd["number"], "attack": c["attack"], "epsilon": float(c["epsilon"])}
        cell |= {k: _num(v) for k, v in c.items() if k not in cell}
        cells.append({**{_key(f): None for f in ATTACK_FIELDS}, **cell})
    return cells


def _robustness(run: Mapping[str, Any]) -> dict[str, Any]:
    per_round = [c for r in run["rounds"] for c in _attack_cells(r)]
    if not per_round:
        return {"measured": False, "note": NOT_MEASURED["robustness"]}
    final_round = max(c["round"] for c in per_round)
    final = [c for c in per_round if c["round"] == final_round]
    return {
        "measured": True,
        "final_round": final_round,
        "attacks": sorted({c["attack"] for c in per_round}),
        "epsilons": sorted({c["epsilon"] for c in per_round}),
        "final": final,
        "per_round": per_round,
    }


def _hardening(run: Mapping[str, Any]) -> dict[str, Any]:
    per_round: list[dict[str, Any]] = []
    for rnd in run["rounds"]:
        rows = _rows(rnd, "hardening")
        if not rows:
            continue
        clean: dict[str, float | None] = {}
        clean_at: dict[tuple[str, float], float | None] = {}
        robust: dict[tuple[str, float | None], float | None] = {}
        methods: set[str] = set()
        for row in rows:
            method, eps = row["attack"] or "(unnamed)", row["epsilon"]
            methods.add(method)
            if row["name"] == "clean-accuracy":
                if eps is None:
                    clean[method] = _num(row["value"])
                else:
                    clean_at[(method, float(eps))] = _num(row["value"])
            elif row["name"] == "robust-accuracy":
                robust[(method, None if eps is None else float(eps))] = _num(row["value"])
        keys = set(robust) | {(m, e) for (m, e) in clean_at}
        for method in sorted(methods, key=_by_label):
            eps_list = sorted({e for (m, e) in keys if m == method}, key=lambda e: -1.0 if e is None else e)
            for eps in eps_list or [None]:
                c = clean_at.get((method, eps), clean.get(method)) if eps is not None else clean.get(method)
                per_round.append({
                    "round": rnd["number"], "method": method, "epsilon": eps,
                    "clean_accuracy": c, "robust_accuracy": robust.get((method, eps)),
                })
    if not per_round:
        return {"measured": False, "note": NOT_MEASURED["hardening"]}
    final_round = max(r["round"] for r in per_round)
    final = [dict(r) for r in per_round if r["round"] == final_round]
    baseline = {r["epsilon"]: r["clean_accuracy"] for r in final if r["method"] == "none"}
    base_clean = next((v for v in baseline.values() if v is not None), None)
    for r in final:
        ref = baseline.get(r["epsilon"], base_clean)
        r["clean_accuracy_cost"] = (
            ref - r["clean_accuracy"] if ref is not None and r["clean_accuracy"] is not None else None
        )
    return {
        "measured": True,
        "final_round": final_round,
        "methods": sorted({r["method"] for r in per_round}, key=_by_label),
        "baseline": "none" if baseline else None,
        "final": final,
        "per_round": per_round,
    }


def _backdoor(run: Mapping[str, Any]) -> dict[str, Any]:
    per_round = []
    for rnd in run["rounds"]:
        cells: dict[str, dict[str, Any]] = {}
        for row in _rows(rnd, "backdoor"):
            cell = cells.setdefault(row["attack"], {"round": rnd["number"], "attack": row["attack"],
                                                    "attack_success_rate": None, "main_accuracy": None})
            cell[_key(row["name"])] = _num(row["value"])
        per_round += [cells[k] for k in sorted(cells)]
    if not per_round:
        return {"measured": False, "note": NOT_MEASURED["backdoor"]}
    return {"measured": True, "attacks": sorted({r["attack"] for r in per_round}), "per_round": per_round}


def _inversion(run: Mapping[str, Any]) -> dict[str, Any]:
    per_round = []
    for rnd in run["rounds"]:
        cells: dict[str, dict[str, float | None]] = {}
        for row in _rows(rnd, "inversion"):
            cells.setdefault(row["attack"] or "none", {})[row["name"]] = _num(row["value"])
        for defence in sorted(cells, key=_by_label):
            v = cells[defence]
            n = v.get("images-count")
            psnr = v.get("psnr", (v["psnr-sum"] / n) if n and v.get("psnr-sum") is not None else None)
            ssim = v.get("ssim", (v["ssim-sum"] / n) if n and v.get("ssim-sum") is not None else None)
            per_round.append({"round": rnd["number"], "defence": defence, "psnr": psnr, "ssim": ssim,
                              "images": n})
    if not per_round:
        return {"measured": False, "note": NOT_MEASURED["inversion"]}
    final_round = max(r["round"] for r in per_round)
    return {
        "measured": True,
        "final_round": final_round,
        "defences": sorted({r["defence"] for r in per_round}, key=_by_label),
        "final": [r for r in per_round if r["round"] == final_round],
        "per_round": per_round,
    }


def _family(run: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A family's cells per round and in the final round, as the family groups them (its columns in HTML)."""
    per_round = [{"round": number, **{k: (v if isinstance(v, str) else _num(v)) for k, v in cell.items()}}
                 for number, cell in query.run_cells(run, name)]
    if not per_round:
        return {"measured": False, "note": BY_NAME[name].absent}
    final_round = max(c["round"] for c in per_round)
    return {"measured": True, "title": BY_NAME[name].title, "final_round": final_round,
            "final": [c for c in per_round if c["round"] == final_round], "per_round": per_round}


def _landscape(run: Mapping[str, Any]) -> dict[str, Any]:
    """Each model's mean-loss grid in the last round that has one; the grids' corners in every round."""
    family = BY_NAME["landscape"]
    per_round = [{"round": number, **cell} for number, cell in query.run_cells(run, "landscape")]
    if not per_round:
        return {"measured": False, "note": family.absent}
    final_round = max(c["round"] for c in per_round)
    grids = ("loss_grid", "accuracy_grid")
    return {"measured": True, "title": family.title, "final_round": final_round,
            "models": [c["model"] for c in per_round if c["round"] == final_round],
            "final": [c for c in per_round if c["round"] == final_round],
            "per_round": [{k: (v if isinstance(v, str) else _num(v)) for k, v in c.items() if k not in grids}
                          for c in per_round]}


def _privacy(run: Mapping[str, Any]) -> dict[str, Any]:
    config = run.get("config", {})
    secure = any(_truthy(config.get(k)) for k in SECURE_AGG_KEYS if k in config)
    per_round, per_site = [], []
    for rnd in run["rounds"]:
        rows = _rows(rnd, "privacy")
        vals = {r["name"]: _num(r["value"]) for r in rows}
        if vals.get("secure-aggregation"):
            secure = True
        if any(r["name"] != "secure-aggregation" for r in rows):
            per_round.append({"round": rnd["number"], "epsilon_spent": vals.get("epsilon-spent"),
                              "delta": vals.get("delta"), "epsilon_budget": vals.get("epsilon-budget")})
        for node, r in query.site_rows(rnd, "privacy"):
            if r["name"] == "epsilon-spent":
                per_site.append({"round": rnd["number"], "site": str(node), "epsilon_spent": _num(r["value"])})
    settings = {k: config[k] for k in PRIVACY_CONFIG_KEYS if k in config}
    # requests a site's own policy refused (fedaegis.shared.site.policy), per site and round
    refusals = query.refusals(run)
    result: dict[str, Any] = {"secure_aggregation": secure, "settings": settings, "refusals": refusals}
    if not per_round and not per_site:
        return {"measured": False, "note": NOT_MEASURED["privacy"], **result}
    if not per_round:  # only site rows: the federation-wide figure is the worst site
        by_round: dict[int, list[float]] = {}
        for s in per_site:
            if s["epsilon_spent"] is not None:
                by_round.setdefault(s["round"], []).append(s["epsilon_spent"])
        per_round = [{"round": k, "epsilon_spent": max(v), "delta": None, "epsilon_budget": None}
                     for k, v in sorted(by_round.items())]
    budgets = [r["epsilon_budget"] for r in per_round if r["epsilon_budget"] is not None]
    result.update(measured=True, per_round=per_round,
                  epsilon_spent_total=next((r["epsilon_spent"] for r in reversed(per_round)
                                            if r["epsilon_spent"] is not None), None),
                  epsilon_budget=budgets[-1] if budgets else None)
    if secure:
        result["per_site"] = None
        result["per_site_note"] = (
            "Secure aggregation was on: the server only saw the sum of the sites' updates, so a "
            "per-site breakdown of the privacy budget is unavailable by design.")
    elif per_site:
        result["per_site"] = per_site
    else:
        result["per_site"] = []
        result["per_site_note"] = "The sites reported no per-site privacy accounting."
    return result


def build_report(run: Mapping[str, Any]) -> dict[str, Any]:
    """The report's content as plain JSON-able data (the HTML is rendered from this)."""
    keep = ("id", "uuid", "name", "status", "error", "flwr_run_id", "num_rounds", "rounds_completed",
            "created_at", "finished_at", "checkpoint_path", "checkpoint_sha256")
    rounds = _round_metrics(run)
    return {
        "schema": JSON_SCHEMA,
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": {k: run.get(k) for k in keep},
        "config": dict(sorted(run.get("config", {}).items())),
        "rounds": {"measured": bool(rounds), "per_round": rounds} if rounds
        else {"measured": False, "note": NOT_MEASURED["rounds"], "per_round": []},
        "robustness": _robustness(run),
        "hardening": _hardening(run),
        **{f.name: _family(run, f.name) for f in FAMILY_SECTIONS},  # segmentation, transfer, defences, detection
        "landscape": _landscape(run),
        "backdoor": _backdoor(run),
        "inversion": _inversion(run),
        "privacy": _privacy(run),
    }


def report_json(run: Mapping[str, Any]) -> str:
    return json.dumps(build_report(run), indent=2, sort_keys=False, allow_nan=False, default=str)
