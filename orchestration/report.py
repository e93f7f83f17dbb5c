"""``fedaegis report RUN``: one self-contained HTML (or JSON) report of a stored run.

The HTML is a single file that opens anywhere, offline: CSS is inline, plots are
matplotlib PNGs (Agg canvas, no display needed) embedded as base64 ``data:`` URIs, and
there is no script and no external URL. Every piece of text from the database is escaped.
The JSON form (``--format json``) holds exactly the same content, without the images:
both are rendered from :func:`build_report`.

Sections, in order: run and its configuration; metrics per round; robustness; hardening
trade-off; backdoor; inversion audit; privacy budget. A section whose rows the run did
not record says so plainly (``"measured": false`` and a ``note`` in JSON) instead of
disappearing, so a reader can tell "not measured" from "measured and fine".

Where the numbers come from: :meth:`fedaegis.shared.store.RunStore.get_run`. Only the
federation-wide rows of a round (``metric_rows``, no site) are reported, except for the
privacy budget, whose per-site rows are shown when there are any. Each metric row is
``(phase, name, value, attack, epsilon)``; the conventions per phase are:

``train`` / ``evaluate``
    ``round["metrics"]``: ``evaluate.accuracy``, ``evaluate.loss``,
    ``evaluate.num-examples``, ``train.train-accuracy``, ``train.train-loss``.

``attack`` (written by the server, see :mod:`fedaegis.shared.robustness`)
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

import base64
import html
import io
import json
import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from .options import DbOption

REPORT_FORMAT = "fedaegis-run-report"
REPORT_VERSION = 1

ATTACK_FIELDS = ("clean-accuracy", "robust-accuracy", "success-rate", "mean-linf", "mean-l2",
                 "mean-queries", "n-count")
SECURE_AGG_KEYS = ("secure-aggregation", "secagg")
PRIVACY_CONFIG_KEYS = ("secure-aggregation", "secagg", "metric-dp", "metric-epsilon", "metric-delta",
                       "metric-epsilon-budget", "dp", "dp-epsilon", "dp-delta", "dp-noise-multiplier",
                       "dp-clip-norm", "target-epsilon", "target-delta")

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


def _num(value: Any) -> float | None:
    """A finite float, or None (NaN/inf are not valid JSON and mean 'not available')."""
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _rows(rnd: Mapping[str, Any], phase: str) -> list[dict[str, Any]]:
    return [r for r in rnd.get("metric_rows", []) if r["phase"] == phase]


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off", "none")
    return bool(value)


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
    cells: dict[tuple[str, float], dict[str, Any]] = {}
    for row in _rows(rnd, "attack"):
        if row["epsilon"] is None:
            continue
        key = (row["attack"], float(row["epsilon"]))
        cell = cells.setdefault(key, {"round": rnd["number"], "attack": key[0], "epsilon": key[1]})
        cell[_key(row["name"])] = _num(row["value"])
    for cell in cells.values():
        for f in ATTACK_FIELDS:
            cell.setdefault(_key(f), None)
    return [cells[k] for k in sorted(cells)]


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
        for node, site_rows in rnd.get("sites", {}).items():
            for r in site_rows:
                if r["phase"] == "privacy" and r["name"] == "epsilon-spent":
                    per_site.append({"round": rnd["number"], "site": str(node), "epsilon_spent": _num(r["value"])})
    settings = {k: config[k] for k in PRIVACY_CONFIG_KEYS if k in config}
    # requests a site's own policy refused (fedaegis.shared.site_policy), per site and round
    refusals = [{"round": rnd["number"], "site": str(node), "request": r["attack"], "field": r["name"]}
                for rnd in run["rounds"] for node, site_rows in rnd.get("sites", {}).items()
                for r in site_rows if r["phase"] == "refusal"]
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
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": {k: run.get(k) for k in keep},
        "config": dict(sorted(run.get("config", {}).items())),
        "rounds": {"measured": bool(rounds), "per_round": rounds} if rounds
        else {"measured": False, "note": NOT_MEASURED["rounds"], "per_round": []},
        "robustness": _robustness(run),
        "hardening": _hardening(run),
        "backdoor": _backdoor(run),
        "inversion": _inversion(run),
        "privacy": _privacy(run),
    }


def report_json(run: Mapping[str, Any]) -> str:
    return json.dumps(build_report(run), indent=2, sort_keys=False, allow_nan=False, default=str)


# -- plots ----------------------------------------------------------------------------------
def _figure(width: float = 7.5, height: float = 3.6):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _round_axis(ax, rounds: Iterable[int]) -> None:
    """Rounds are integers: tick each (up to 25), never 0.96 ... 1.04."""
    ticks = sorted(set(rounds))
    if ticks and len(ticks) <= 25:
        ax.set_xticks(ticks)
        ax.set_xlim(ticks[0] - 0.3, ticks[-1] + 0.3)
    else:
        ax.xaxis.get_major_locator().set_params(integer=True)


def _empty(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"{what}: not recorded", ha="center", va="center", transform=ax.transAxes, color="grey")


def _by_label(label: str) -> tuple[bool, str]:
    """Sort order of methods/defences: the undefended baseline ``none`` first."""
    return (label != "none", label)


def _series(rows: Iterable[Mapping[str, Any]], x: str, y: str) -> tuple[list[float], list[float]]:
    pts = [(r[x], r[y]) for r in rows if r.get(x) is not None and r.get(y) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def _plot_rounds(rounds: list[dict[str, Any]]) -> str | None:
    if not rounds:
        return None
    fig = _figure(9, 3.4)
    ax_acc, ax_loss = fig.subplots(1, 2)
    for key, label, style in (("accuracy", "test accuracy", "o-"), ("train_accuracy", "train accuracy", "s--")):
        xs, ys = _series(rounds, "round", key)
        if xs:
            ax_acc.plot(xs, ys, style, label=label)
    for key, label, style in (("loss", "test loss", "o-"), ("train_loss", "train loss", "s--")):
        xs, ys = _series(rounds, "round", key)
        if xs:
            ax_loss.plot(xs, ys, style, label=label)
    ax_acc.set(title="Accuracy per round", xlabel="round", ylabel="accuracy", ylim=(0, 1.02))
    ax_loss.set(title="Loss per round", xlabel="round", ylabel="loss")
    for ax, what in ((ax_acc, "accuracy"), (ax_loss, "loss")):
        ax.grid(alpha=0.3)
        _round_axis(ax, [r["round"] for r in rounds])
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            _empty(ax, what)
    return _png(fig)


def _plot_robustness(sec: dict[str, Any]) -> str:
    fig = _figure()
    ax = fig.subplots()
    clean: list[float] = []
    for attack in sec["attacks"]:
        rows = [c for c in sec["final"] if c["attack"] == attack]
        xs, ys = _series(rows, "epsilon", "robust_accuracy")
        if xs:
            ax.plot([x * 255 for x in xs], ys, "o-", label=attack)
        clean += [c["clean_accuracy"] for c in rows if c["clean_accuracy"] is not None]
    if clean:
        ax.axhline(sum(clean) / len(clean), color="grey", ls=":", label="clean accuracy (attacked subset)")
    ax.set(title=f"Robust accuracy vs epsilon (round {sec['final_round']})",
           xlabel="epsilon (L-inf, x/255)", ylabel="robust accuracy", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def _plot_hardening(sec: dict[str, Any]) -> str:
    fig = _figure()
    ax = fig.subplots()
    for method in sec["methods"]:
        rows = [r for r in sec["final"] if r["method"] == method]
        xs, ys = _series(rows, "robust_accuracy", "clean_accuracy")
        if not xs:
            continue
        (line,) = ax.plot(xs, ys, "o-", label=method)
        for r in rows:
            if r["robust_accuracy"] is not None and r["clean_accuracy"] is not None and r["epsilon"] is not None:
                ax.annotate(f"{r['epsilon'] * 255:.3g}/255", (r["robust_accuracy"], r["clean_accuracy"]),
                            textcoords="offset points", xytext=(4, 4), fontsize=7, color=line.get_color())
    ax.set(title=f"Hardening trade-off (round {sec['final_round']})", xlabel="robust accuracy",
           ylabel="clean accuracy", xlim=(0, 1.02), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    return _png(fig)


def _plot_backdoor(sec: dict[str, Any]) -> str:
    fig = _figure()
    ax = fig.subplots()
    for attack in sec["attacks"]:
        rows = [r for r in sec["per_round"] if r["attack"] == attack]
        label = attack or "backdoor"
        xs, ys = _series(rows, "round", "attack_success_rate")
        if xs:
            (line,) = ax.plot(xs, ys, "o-", label=f"{label}: attack success rate")
            color = line.get_color()
        else:
            color = None
        xs, ys = _series(rows, "round", "main_accuracy")
        if xs:
            ax.plot(xs, ys, "s--", color=color, label=f"{label}: main accuracy")
    ax.set(title="Backdoor: attack success vs main-task accuracy", xlabel="round", ylabel="rate",
           ylim=(0, 1.02))
    _round_axis(ax, [r["round"] for r in sec["per_round"]])
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    return _png(fig)


def _plot_inversion(sec: dict[str, Any]) -> str:
    fig = _figure(9, 3.4)
    ax_p, ax_s = fig.subplots(1, 2)
    rows = sec["final"]
    names = [r["defence"] for r in rows]
    pos = list(range(len(rows)))
    ax_p.bar(pos, [r["psnr"] or 0 for r in rows], color="#4c72b0")
    ax_s.bar(pos, [r["ssim"] or 0 for r in rows], color="#dd8452")
    ax_p.set(title=f"Reconstruction PSNR (round {sec['final_round']})", ylabel="PSNR (dB), lower is better")
    ax_s.set(title=f"Reconstruction SSIM (round {sec['final_round']})", ylabel="SSIM, lower is better",
             ylim=(0, 1))
    for ax in (ax_p, ax_s):
        ax.set_xticks(pos, names, rotation=20, fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    return _png(fig)


def _plot_privacy(sec: dict[str, Any]) -> str:
    fig = _figure()
    ax = fig.subplots()
    xs, ys = _series(sec["per_round"], "round", "epsilon_spent")
    ax.plot(xs, ys, "o-", lw=2, color="black", label="federation-wide", zorder=3)
    for site in sorted({s["site"] for s in sec.get("per_site") or []}):
        sx, sy = _series([s for s in sec["per_site"] if s["site"] == site], "round", "epsilon_spent")
        ax.plot(sx, sy, ".--", alpha=0.8, label=f"site {site}")
    if sec.get("epsilon_budget") is not None:
        ax.axhline(sec["epsilon_budget"], color="red", ls=":", label="budget")
    ax.set(title="Privacy budget spent", xlabel="round", ylabel="epsilon spent (cumulative)")
    ax.set_ylim(bottom=0)
    _round_axis(ax, [r["round"] for r in sec["per_round"]])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


# -- HTML -----------------------------------------------------------------------------------
CSS = """
body{font-family:"DejaVu Sans",Helvetica,Arial,sans-serif;margin:24px auto;max-width:1100px;color:#1d2430;
background:#fff;line-height:1.4;padding:0 16px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 8px;border-bottom:2px solid #d8dee9;
padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}
.meta{color:#555;font-size:13px}.status{display:inline-block;padding:1px 8px;border-radius:9px;
font-size:12px;background:#e5e9f0}.status.completed{background:#d4edda}.status.failed{background:#f8d7da}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid #d8dee9;padding:3px 9px;text-align:right}th{background:#eef1f6}
td.k,th.k{text-align:left}tbody tr:nth-child(even){background:#f8f9fb}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:8px 12px;margin:8px 0;font-size:14px}
.ok{background:#e8f5e9;border-left-color:#43a047}
figure{margin:8px 0}img.plot{max-width:100%;border:1px solid #e5e9f0}
nav a{margin-right:12px;font-size:13px}code{font-size:12px}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _v(value: Any) -> str:
    """A config value as written in run config (TOML/JSON-like: true, 0.5, "text" shown bare)."""
    return _e(value if isinstance(value, str) else json.dumps(value, default=str))


def _f(value: Any, spec: str = ".4f") -> str:
    v = _num(value)
    return "&ndash;" if v is None else _e(format(v, spec))


def _eps(eps: float | None) -> str:
    return "&ndash;" if eps is None else _e(f"{eps * 255:.3g}/255")


def _table(headers: list[str], rows: list[list[str]], cls: str = "", left: int | tuple[int, ...] = 0) -> str:
    """``rows`` are already escaped cell HTML; text columns (the first ``left``, or those indexed
    by a tuple ``left``) are left-aligned, numbers right-aligned."""
    text_cols = set(left) if isinstance(left, tuple) else set(range(left))
    head = "".join(f'<th class="k">{_e(h)}</th>' if i in text_cols else f"<th>{_e(h)}</th>"
                   for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f'<td class="k">{c}</td>' if i in text_cols else f"<td>{c}</td>"
                         for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f'<table class="{_e(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _img(src: str, alt: str) -> str:
    return f'<figure><img class="plot" src="{src}" alt="{_e(alt)}"></figure>'


def _note(text: str, ok: bool = False) -> str:
    return f'<p class="note{" ok" if ok else ""}">{_e(text)}</p>'


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{_e(anchor)}"><h2>{_e(title)}</h2>{body}</section>'


def _html_run(rep: dict[str, Any]) -> str:
    run = rep["run"]
    rows = [[_e(k), _e(run.get(k))] for k in ("id", "uuid", "name", "status", "num_rounds", "rounds_completed",
                                                "created_at", "finished_at", "flwr_run_id", "checkpoint_path",
                                                "checkpoint_sha256")]
    if run.get("error"):
        rows.append([_e("error"), _e(run["error"])])
    cfg_rows = [[_e(k), _v(v)] for k, v in rep["config"].items()]
    body = "<h3>Run</h3>" + _table(["field", "value"], rows, "run", left=2)
    body += "<h3>Configuration</h3>" + (
        _table(["key", "value"], cfg_rows, "config", left=2) if cfg_rows else _note("No configuration was stored.")
    )
    return _section("configuration", "Run configuration", body)


def _html_rounds(rep: dict[str, Any]) -> str:
    sec = rep["rounds"]
    if not sec["measured"]:
        return _section("rounds", "Metrics per round", _note(sec["note"]))
    rows = [[_e(r["round"]), _f(r["train_loss"]), _f(r["train_accuracy"]), _f(r["loss"]), _f(r["accuracy"]),
             _f(r["num_examples"], ".0f"), _e(r["train_replies"]), _e(r["evaluate_replies"]), _e(r["failures"])]
            for r in sec["per_round"]]
    body = _img(_plot_rounds(sec["per_round"]) or "", "accuracy and loss per round")
    body += _table(["round", "train loss", "train acc", "test loss", "test acc", "test n", "train replies",
                    "eval replies", "failures"], rows, "rounds")
    return _section("rounds", "Metrics per round", body)


def _attack_row(c: dict[str, Any], with_round: bool) -> list[str]:
    cells = [_e(c["round"])] if with_round else []
    return cells + [_e(c["attack"]), _eps(c["epsilon"]), _f(c["clean_accuracy"], ".3f"),
                    _f(c["robust_accuracy"], ".3f"), _f(c["success_rate"], ".3f"), _f(c["mean_linf"], ".4f"),
                    _f(c["mean_l2"], ".3f"), _f(c["n_count"], ".0f")]


def _html_robustness(rep: dict[str, Any]) -> str:
    sec = rep["robustness"]
    if not sec["measured"]:
        return _section("robustness", "Adversarial robustness", _note(sec["note"]))
    heads = ["attack", "eps", "clean acc", "robust acc", "success rate", "mean L-inf", "mean L2", "n"]
    body = _img(_plot_robustness(sec), "robust accuracy versus epsilon per attack")
    body += f"<h3>Final round ({_e(sec['final_round'])})</h3>"
    body += _table(heads, [_attack_row(c, False) for c in sec["final"]], "robustness-final", left=1)
    body += "<h3>Per round</h3>"
    body += _table(["round", *heads], [_attack_row(c, True) for c in sec["per_round"]], "robustness-rounds",
                   left=(1,))
    return _section("robustness", "Adversarial robustness", body)


def _html_hardening(rep: dict[str, Any]) -> str:
    sec = rep["hardening"]
    if not sec["measured"]:
        return _section("hardening", "Hardening trade-off", _note(sec["note"]))
    cost_head = "clean-acc cost vs none" if sec["baseline"] else "clean-acc cost"
    rows = [[_e(r["method"]), _eps(r["epsilon"]), _f(r["clean_accuracy"], ".3f"), _f(r["robust_accuracy"], ".3f"),
             _f(r["clean_accuracy_cost"], "+.3f")] for r in sec["final"]]
    body = _img(_plot_hardening(sec), "clean versus robust accuracy per hardening method")
    body += f"<h3>Final round ({_e(sec['final_round'])})</h3>"
    body += _table(["method", "eps", "clean acc", "robust acc", cost_head], rows, "hardening-final", left=1)
    if len({r["round"] for r in sec["per_round"]}) > 1:
        rows = [[_e(r["round"]), _e(r["method"]), _eps(r["epsilon"]), _f(r["clean_accuracy"], ".3f"),
                 _f(r["robust_accuracy"], ".3f")] for r in sec["per_round"]]
        body += "<h3>Per round</h3>" + _table(["round", "method", "eps", "clean acc", "robust acc"], rows,
                                              "hardening-rounds", left=(1,))
    return _section("hardening", "Hardening trade-off", body)


def _html_backdoor(rep: dict[str, Any]) -> str:
    sec = rep["backdoor"]
    if not sec["measured"]:
        return _section("backdoor", "Backdoor results", _note(sec["note"]))
    rows = [[_e(r["round"]), _e(r["attack"] or "-"), _f(r["attack_success_rate"], ".3f"),
             _f(r["main_accuracy"], ".3f")] for r in sec["per_round"]]
    body = _img(_plot_backdoor(sec), "backdoor attack success rate and main accuracy per round")
    body += _table(["round", "attack", "attack success rate", "main accuracy"], rows, "backdoor", left=(1,))
    return _section("backdoor", "Backdoor results", body)


def _html_inversion(rep: dict[str, Any]) -> str:
    sec = rep["inversion"]
    if not sec["measured"]:
        return _section("inversion", "Inversion audit", _note(sec["note"]))
    rows = [[_e(r["round"]), _e(r["defence"]), _f(r["psnr"], ".2f"), _f(r["ssim"], ".3f"),
             _f(r["images"], ".0f")] for r in sec["per_round"]]
    body = _img(_plot_inversion(sec), "reconstruction PSNR and SSIM per defence")
    body += _note("PSNR/SSIM of the attacker's best reconstruction of the sites' images from their "
                  "updates: lower means less was recovered.")
    body += _table(["round", "defence", "PSNR (dB)", "SSIM", "images"], rows, "inversion", left=(1,))
    return _section("inversion", "Inversion audit", body)


def _html_privacy(rep: dict[str, Any]) -> str:
    sec = rep["privacy"]
    secure = "on" if sec["secure_aggregation"] else "off"
    body = f"<p>Secure aggregation: <strong>{_e(secure)}</strong></p>"
    if sec["settings"]:
        body += _table(["setting", "value"], [[_e(k), _v(v)] for k, v in sec["settings"].items()],
                       "privacy-settings", left=2)
    if sec.get("refusals"):
        body += "<h3>Requests refused by the sites' policies</h3>"
        body += _table(["round", "site", "request", "policy field"],
                       [[_e(r["round"]), _e(r["site"]), _e(r["request"]), _e(r["field"])] for r in sec["refusals"]],
                       "privacy-refusals", left=(1, 2, 3))
    if not sec["measured"]:
        return _section("privacy", "Privacy budget spent", body + _note(sec["note"]))
    total, budget = sec.get("epsilon_spent_total"), sec.get("epsilon_budget")
    summary = f"Epsilon spent by the end of the run: {_f(total, '.3f')}"
    if budget is not None:
        summary += f" of a budget of {_f(budget, '.3f')}"
    body += f"<p>{summary}</p>"
    body += _img(_plot_privacy(sec), "privacy budget spent per round")
    rows = [[_e(r["round"]), _f(r["epsilon_spent"], ".3f"), _f(r["delta"], ".2e"), _f(r["epsilon_budget"], ".3f")]
            for r in sec["per_round"]]
    body += "<h3>Federation-wide</h3>"
    body += _table(["round", "epsilon spent", "delta", "budget"], rows, "privacy-rounds")
    body += "<h3>Per site</h3>"
    if sec.get("per_site"):
        rows = [[_e(s["round"]), _e(s["site"]), _f(s["epsilon_spent"], ".3f")] for s in sec["per_site"]]
        body += _table(["round", "site", "epsilon spent"], rows, "privacy-sites", left=(1,))
    else:
        body += _note(sec.get("per_site_note", ""))
    return _section("privacy", "Privacy budget spent", body)


SECTIONS = (("configuration", "Configuration"), ("rounds", "Rounds"), ("robustness", "Robustness"),
            ("hardening", "Hardening"), ("backdoor", "Backdoor"), ("inversion", "Inversion"),
            ("privacy", "Privacy"))


def render_html(report: dict[str, Any]) -> str:
    """A self-contained HTML page (inline CSS, base64 PNG plots, no script, no URL)."""
    run = report["run"]
    title = f"fedaegis run {run['id']}" + (f" \u2014 {run['name']}" if run.get("name") else "")
    status = str(run.get("status") or "")
    nav = "".join(f'<a href="#{a}">{_e(t)}</a>' for a, t in SECTIONS)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
        'style-src \'unsafe-inline\'">',
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        f"<header><h1>{_e(title)}</h1>",
        f'<p class="meta">uuid <code>{_e(run["uuid"])}</code> &middot; '
        f'<span class="status {_e(status)}">{_e(status)}</span> &middot; '
        f'{_e(run.get("rounds_completed"))}/{_e(run.get("num_rounds"))} rounds &middot; '
        f'created {_e(run.get("created_at"))} &middot; report generated {_e(report["generated_at"])}</p>',
        f"<nav>{nav}</nav></header><main>",
        _html_run(report), _html_rounds(report), _html_robustness(report), _html_hardening(report),
        _html_backdoor(report), _html_inversion(report), _html_privacy(report),
        "</main></body></html>",
    ]
    return "\n".join(parts)


def report_html(run: Mapping[str, Any]) -> str:
    return render_html(build_report(run))


# -- command --------------------------------------------------------------------------------
class ReportFormat(str, Enum):
    html = "html"
    json = "json"


def report(
    run: Annotated[str, typer.Argument(help="Run id or uuid.")],
    db_url: DbOption = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write ('-': stdout). Default: "
                                                "./fedaegis-run-<id>.html; JSON goes to stdout.")] = None,
    fmt: Annotated[ReportFormat, typer.Option("--format", help="html (self-contained page) or json.")] = ReportFormat.html,
) -> None:
    """Write a self-contained HTML (or JSON) report of a stored run."""
    from rich.console import Console

    from ..shared.config import default_db_url
    from ..shared.store import RunNotFoundError, RunStore

    err = Console(stderr=True)
    try:
        detail = RunStore(db_url or default_db_url()).get_run(run)
    except RunNotFoundError as exc:
        err.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
        raise typer.Exit(code=2)
    if fmt is ReportFormat.json:
        text = report_json(detail)
    else:
        try:
            text = report_html(detail)
        except ImportError as exc:
            err.print(f"[bold red]error:[/] the HTML report needs matplotlib ({exc}); "
                      "use --format json or install matplotlib")
            raise typer.Exit(code=2)
    if output is None and fmt is ReportFormat.html:
        output = Path(f"fedaegis-run-{detail['id']}.html")
    if output is None or str(output) == "-":
        typer.echo(text)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text + ("" if text.endswith("\n") else "\n"), encoding="utf-8")
    err.print(f"report of run {detail['id']} written to {output}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    """Add ``report`` to ``app`` (a second call is a no-op)."""
    if any(c.name == "report" or c.callback is report for c in app.registered_commands):
        return
    app.command("report")(report)
