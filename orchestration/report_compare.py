"""``fedaegis report RUN RUN ...`` / ``--sweep NAME``: one report that compares stored runs.

A single run's report (:mod:`.report_content`) answers "what happened in this run"; a study asks
"which configuration is more robust, and at what cost in clean accuracy". So this report puts
the results first: robust accuracy against epsilon for every run and attack on one figure
(each run its colour, each attack its marker and line style, curves nudged apart so that equal
curves stay visible), the clean/robust trade-off across runs and hardening methods, robust
accuracy per round, segmentation and detection results when present, then what differs
between the runs' configurations, the attack parameters, and provenance (versions, data file
SHA-256, git commit). Every accuracy that comes from counts carries its Wilson 95% interval:
with 128 attacked images an accuracy is known only to about +-0.08, which decides whether two
runs differ at all. The same content is available as JSON (``--format json``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import subprocess
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..shared.results.base import eps_display
from . import report_content, report_html, report_plots
from .options import JSON_SCHEMA

COMPARE_FORMAT = "fedaegis-comparison-report"
Z95 = 1.959963984540054


def wilson(k: float | None, n: float | None, z: float = Z95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion ``k / n`` (None without a positive count)."""
    if k is None or n is None or n <= 0:
        return None
    p = min(max(k / n, 0.0), 1.0)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _label(run: Mapping[str, Any]) -> str:
    return f"#{run['id']} {run.get('name') or ''}".strip()


def _clean(run: Mapping[str, Any]) -> dict[str, Any]:
    if not run["rounds"]:
        return {"accuracy": None, "ci": None, "n": None}
    m = run["rounds"][-1]["metrics"]
    n, k = report_content._num(m.get("evaluate.num-examples")), report_content._num(m.get("evaluate.correct"))
    return {"accuracy": report_content._num(m.get("evaluate.accuracy")), "ci": wilson(k, n), "n": n}


def _cells(run: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Attack cells of every round, with Wilson intervals from their counts."""
    out = []
    for rnd in run["rounds"]:
        for cell in report_content._attack_cells(rnd):
            n = cell.get("n_count")
            cell["robust_ci"] = wilson(cell.get("robust_correct"), n)
            cell["clean_ci"] = wilson(cell.get("clean_correct"), n)
            out.append(cell)
    return out


def _hardening(run: Mapping[str, Any]) -> list[dict[str, Any]]:
    sec = report_content._hardening(run)
    return sec.get("final", []) if sec.get("measured") else []


def _segmentation(run: Mapping[str, Any]) -> dict[str, float]:
    rows = report_content._rows(run["rounds"][-1], "segmentation") if run["rounds"] else []
    return {r["name"]: r["value"] for r in rows if "dice" in r["name"] or "hd95" in r["name"]}


def _detection(run: Mapping[str, Any]) -> list[dict[str, Any]]:
    from ..shared.results import query

    if not run["rounds"]:
        return []
    rnd = run["rounds"][-1]
    routed = [c for c in query.cells(rnd, "defences") if c.get("system") == "routed"]
    return [{"kind": "detector", **c} for c in query.cells(rnd, "detection")] + [{"kind": "routed", **c} for c in routed]


def _attack_parameters(attacks: set[str]) -> dict[str, dict[str, Any]]:
    from ..shared.attacks import ATTACKS, attack_params

    out = {}
    for name in sorted(attacks):
        base = name.split(":", 1)[0]
        if base in ATTACKS:
            out[name] = {k: (v if isinstance(v, int | float | str | bool) or v is None else str(v))
                         for k, v in attack_params(base).items()}
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _data_file(source: str) -> Path | None:
    if source.startswith("embedded:"):
        path = Path(__file__).resolve().parents[1] / "shared" / "data" / "embedded" / f"{source.split(':', 1)[1]}.npz"
    else:
        path = Path(source)
    return path if path.is_file() else None


def provenance(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Versions of what made the report (and ran the runs, when on this machine), data hashes, commit."""
    versions = {}
    for dist in ("fedaegis", "torch", "flwr", "ray", "monai", "opacus"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    data = {}
    for source in sorted({str(r.get("config", {}).get("dataset", "")) for r in runs} - {""}):
        path = _data_file(source)
        data[source] = _sha256(path) if path else None  # None: not on this machine
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"versions": versions, "data_sha256": data, "git_commit": commit}


def build_comparison(runs: Sequence[Mapping[str, Any]], title: str) -> dict[str, Any]:
    """The comparison's content as plain JSON-able data (the HTML is rendered from this)."""
    entries = []
    attacks: set[str] = set()
    for run in runs:
        cells = _cells(run)
        final_round = max((c["round"] for c in cells), default=None)
        attacks |= {c["attack"] for c in cells}
        entries.append({
            "id": run["id"], "uuid": run["uuid"], "name": run.get("name"), "label": _label(run),
            "status": run.get("status"), "rounds_completed": run.get("rounds_completed"),
            "clean": _clean(run), "final_round": final_round,
            "final": [c for c in cells if c["round"] == final_round], "per_round": cells,
            "hardening": _hardening(run), "segmentation": _segmentation(run), "detection": _detection(run),
        })
    configs = [dict(r.get("config", {})) for r in runs]
    keys = sorted({k for c in configs for k in c})
    differing = {k: [c.get(k) for c in configs] for k in keys if len({json.dumps(c.get(k)) for c in configs}) > 1}
    common = {k: configs[0].get(k) for k in keys if k not in differing} if configs else {}
    return {
        "schema": JSON_SCHEMA, "format": COMPARE_FORMAT, "version": 1, "title": title,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "runs": entries, "config_differs": differing, "config_common": common,
        "attack_parameters": _attack_parameters(attacks), "provenance": provenance(runs),
    }


def comparison_json(runs: Sequence[Mapping[str, Any]], title: str) -> str:
    return json.dumps(build_comparison(runs, title), indent=2, allow_nan=False, default=str)


# -- plots ----------------------------------------------------------------------------------
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINES = ("-", "--", ":", "-.")


def _err(values: list[float], cis: list[tuple[float, float] | None]) -> list[list[float]]:
    lo = [v - ci[0] if ci else 0.0 for v, ci in zip(values, cis)]
    hi = [ci[1] - v if ci else 0.0 for v, ci in zip(values, cis)]
    return [lo, hi]


def _plot_epsilon(rep: dict[str, Any]) -> str | None:
    series = [(i, run, attack) for i, run in enumerate(rep["runs"])
              for attack in sorted({c["attack"] for c in run["final"]})]
    if not series:
        return None
    fig = report_plots._figure(9, 4.6)
    ax = fig.subplots()
    step = min(0.06, 0.4 / max(1, len(series)))  # a nudge along epsilon (x/255): equal curves stay visible
    for j, (i, run, attack) in enumerate(series):
        rows = sorted((c for c in run["final"] if c["attack"] == attack and c.get("robust_accuracy") is not None),
                      key=lambda c: c["epsilon"])
        xs = [c["epsilon"] * 255 + (j - (len(series) - 1) / 2) * step for c in rows]
        ys = [c["robust_accuracy"] for c in rows]
        attack_idx = sorted({a for _, _, a in series}).index(attack)
        ax.errorbar(xs, ys, yerr=_err(ys, [c["robust_ci"] for c in rows]), color=f"C{i % 10}",
                    marker=MARKERS[attack_idx % len(MARKERS)], ls=LINES[attack_idx % len(LINES)], capsize=2,
                    ms=5, lw=1.3, label=f"{run['label']} · {attack}")
    ax.set(title="Robust accuracy vs epsilon (final round; bars: Wilson 95%)", xlabel="epsilon (L-inf, x/255)",
           ylabel="robust accuracy", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return report_plots._png(fig)


def _tradeoff_points(rep: dict[str, Any]) -> list[dict[str, Any]]:
    """(clean, robust) per run at its largest epsilon under its strongest attack, and per hardening method."""
    points = []
    for i, run in enumerate(rep["runs"]):
        if run["final"]:
            eps = max(c["epsilon"] for c in run["final"])
            worst = min((c for c in run["final"] if c["epsilon"] == eps and c.get("robust_accuracy") is not None),
                        key=lambda c: c["robust_accuracy"], default=None)
            if worst is not None:
                points.append({"label": f"{run['label']} ({worst['attack']})", "color": i, "epsilon": eps,
                               "clean": worst.get("clean_accuracy"), "clean_ci": worst["clean_ci"],
                               "robust": worst["robust_accuracy"], "robust_ci": worst["robust_ci"]})
        hard = run["hardening"]
        eps = max((r["epsilon"] for r in hard if r.get("epsilon") is not None), default=None)
        if eps is not None:
            for r in hard:
                if r.get("epsilon") == eps and r.get("robust_accuracy") is not None:
                    points.append({"label": f"{run['label']} · {r['method']}", "color": i, "epsilon": eps,
                                   "clean": r.get("clean_accuracy"), "clean_ci": None,
                                   "robust": r["robust_accuracy"], "robust_ci": None})
    return [p for p in points if p["clean"] is not None]


def _plot_tradeoff(points: list[dict[str, Any]]) -> str | None:
    if not points:
        return None
    fig = report_plots._figure(9, 4.6)
    ax = fig.subplots()
    for k, p in enumerate(points):
        nudge = (k - (len(points) - 1) / 2) * min(0.004, 0.04 / len(points))  # equal points stay visible
        ax.errorbar([p["clean"] + nudge], [p["robust"]], xerr=_err([p["clean"]], [p["clean_ci"]]),
                    yerr=_err([p["robust"]], [p["robust_ci"]]), color=f"C{p['color'] % 10}",
                    marker=MARKERS[k % len(MARKERS)], ms=7, capsize=2, ls="none",
                    label=f"{p['label']} @ {eps_display(p['epsilon'])}")
    ax.set(title="Clean vs robust accuracy (the trade-off)", xlabel="clean accuracy", ylabel="robust accuracy",
           xlim=(0, 1.02), ylim=(0, 1.02))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return report_plots._png(fig)


def _plot_rounds(rep: dict[str, Any]) -> str | None:
    series = []
    for i, run in enumerate(rep["runs"]):
        if not run["per_round"]:
            continue
        eps = max(c["epsilon"] for c in run["per_round"])
        for attack in sorted({c["attack"] for c in run["per_round"]}):
            rows = sorted((c for c in run["per_round"] if c["attack"] == attack and c["epsilon"] == eps
                           and c.get("robust_accuracy") is not None), key=lambda c: c["round"])
            series.append((i, run, attack, eps, rows))
    if not series:
        return None
    fig = report_plots._figure(9, 4.2)
    ax = fig.subplots()
    attacks = sorted({s[2] for s in series})
    for j, (i, run, attack, eps, rows) in enumerate(series):
        xs = [c["round"] + (j - (len(series) - 1) / 2) * min(0.04, 0.4 / len(series)) for c in rows]
        ys = [c["robust_accuracy"] for c in rows]
        k = attacks.index(attack)
        ax.errorbar(xs, ys, yerr=_err(ys, [c["robust_ci"] for c in rows]), color=f"C{i % 10}",
                    marker=MARKERS[k % len(MARKERS)], ls=LINES[k % len(LINES)], capsize=2, ms=5,
                    label=f"{run['label']} · {attack} @ {eps_display(eps)}")
    report_plots._round_axis(ax, [c["round"] for s in series for c in s[4]])
    ax.set(title="Robust accuracy per round (largest epsilon)", xlabel="round", ylabel="robust accuracy",
           ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return report_plots._png(fig)


# -- html -----------------------------------------------------------------------------------
def _acc(value: float | None, ci: Sequence[float] | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def render_comparison(rep: dict[str, Any]) -> str:
    """A self-contained HTML page (inline CSS, base64 PNG plots, no script, no URL)."""
    e, table, section, img, note = report_html._e, report_html._table, report_html._section, report_html._img, report_html._note
    parts = []
    summary = [[e(r["label"]), e(r["status"]), e(r["rounds_completed"]), _acc(r["clean"]["accuracy"], r["clean"]["ci"]),
                e(r["clean"]["n"])] for r in rep["runs"]]
    body = table(["run", "status", "rounds", "clean accuracy [Wilson 95%]", "test n"], summary, "summary", left=(0, 1))
    parts.append(section("summary", "Runs", body))

    plot = _plot_epsilon(rep)
    rows = [[e(r["label"]), e(c["attack"]), report_html._eps(c["epsilon"]), _acc(c.get("clean_accuracy"), c["clean_ci"]),
             _acc(c.get("robust_accuracy"), c["robust_ci"]), report_html._f(c.get("success_rate"), ".3f"), e(c.get("n_count"))]
            for r in rep["runs"] for c in r["final"]]
    body = (img(plot, "robust accuracy against epsilon, every run and attack") if plot else "") + (
        table(["run", "attack", "eps", "clean [95%]", "robust [95%]", "success", "n"], rows, "robustness", left=(0, 1))
        if rows else note("None of these runs measured adversarial robustness."))
    parts.append(section("robustness", "Robust accuracy against epsilon", body))

    points = _tradeoff_points(rep)
    plot = _plot_tradeoff(points)
    rows = [[e(p["label"]), report_html._eps(p["epsilon"]), _acc(p["clean"], p["clean_ci"]), _acc(p["robust"], p["robust_ci"])]
            for p in points]
    body = (img(plot, "clean against robust accuracy across runs and hardening methods") if plot else "") + (
        table(["run / method", "eps", "clean [95%]", "robust [95%]"], rows, "tradeoff", left=0) if rows
        else note("No robust accuracy to trade off."))
    parts.append(section("tradeoff", "Clean vs robust accuracy", body))

    plot = _plot_rounds(rep)
    parts.append(section("rounds", "Robustness per round",
                         img(plot, "robust accuracy per round") if plot else note("No per-round robustness.")))

    seg = [(r, r["segmentation"]) for r in rep["runs"] if r["segmentation"]]
    if seg:
        rows = [[e(r["label"]), e(name), report_html._f(v, ".4f")] for r, vals in seg for name, v in sorted(vals.items())]
        parts.append(section("segmentation", "Segmentation (Dice, robust Dice, per class)",
                             table(["run", "metric", "value"], rows, "segmentation", left=(0, 1))))
    det = [(r, d) for r in rep["runs"] for d in r["detection"]]
    if det:
        rows = [[e(r["label"]), e(d["kind"]), e(d.get("detector") or d.get("threat") or ""), report_html._eps(d.get("epsilon")),
                 e(", ".join(f"{k} {report_html._f(v, '.3f')}" for k, v in sorted(d.items())
                             if isinstance(v, float) and k != "epsilon"))] for r, d in det]
        parts.append(section("detection", "Detection (ROC AUC, routed accuracy)",
                             table(["run", "kind", "detector / threat", "eps", "values"], rows, "detection",
                                   left=(0, 1, 2, 4))))

    rows = [[e(a), e(", ".join(f"{k}={v}" for k, v in params.items()))] for a, params in rep["attack_parameters"].items()]
    parts.append(section("attacks", "Attack parameters",
                         note("Parameters of fedaegis' attack library as the sites run them (the run config "
                              "sets the attacks, epsilons and attack-samples).", ok=True)
                         + (table(["attack", "parameters"], rows, "attack-parameters", left=(0, 1)) if rows else "")))

    runs = rep["runs"]
    rows = [[e(k), *[e(v) for v in vals]] for k, vals in rep["config_differs"].items()]
    body = (table(["key", *[e(r["label"]) for r in runs]], rows, "config-differs", left=0) if rows
            else note("The runs share one configuration."))
    rows = [[e(k), e(v)] for k, v in rep["config_common"].items()]
    body += "<details><summary>shared configuration</summary>" + table(["key", "value"], rows, "config", left=(0, 1)) + "</details>"
    parts.append(section("config", "Configuration: what differs", body))

    prov = rep["provenance"]
    rows = [[e(k), e(v or "-")] for k, v in prov["versions"].items()]
    rows += [[e(f"SHA-256 of {k}"), e(v or "not on this machine")] for k, v in prov["data_sha256"].items()]
    rows.append(["git commit", e(prov["git_commit"] or "not a git checkout")])
    parts.append(section("provenance", "Provenance", table(["what", "value"], rows, "provenance", left=(0, 1))))

    title = rep["title"]
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
        'style-src \'unsafe-inline\'">',
        f"<title>{e(title)}</title><style>{report_html.CSS}</style></head><body>",
        f"<header><h1>{e(title)}</h1><p class=\"meta\">{len(runs)} runs &middot; report generated "
        f"{e(rep['generated_at'])}</p></header><main>", *parts, "</main></body></html>",
    ])


def comparison_html(runs: Sequence[Mapping[str, Any]], title: str) -> str:
    return render_comparison(build_comparison(runs, title))
