"""The report as one self-contained HTML page: inline CSS, embedded plots, no script, no URL.

Every piece of text from the database is escaped here.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import Any

from ..shared.results import BY_NAME, query
from ..shared.results.base import eps_display
from ..shared.results.landscape import LOSS_BOUND
from .report_content import FAMILY_SECTIONS, _num, build_report
from .report_plots import (
    _plot_backdoor,
    _plot_hardening,
    _plot_inversion,
    _plot_landscape,
    _plot_privacy,
    _plot_robustness,
    _plot_rounds,
)

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
    return "&ndash;" if eps is None else _e(eps_display(eps))


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


def _html_family(rep: dict[str, Any], name: str) -> str:
    """A family's section as its own columns declare it (the table ``show`` prints)."""
    sec, title = rep[name], BY_NAME[name].heading
    if not sec["measured"]:
        return _section(name, title, _note(sec["note"]))
    family = BY_NAME[name]
    heads = ["round"] + [c.header for c in family.columns]
    text = tuple(i + 1 for i, c in enumerate(family.columns) if c.spec == "text")
    rows = [[_e(c["round"]), *[_e(v) for v in query.table(family, [c], "-")[0]]] for c in sec["per_round"]]
    body = _note(sec["title"], ok=True) + _table(heads, rows, name, left=text)
    return _section(name, title, body)


def _html_landscape(rep: dict[str, Any]) -> str:
    """The loss landscape of each model in its last round (surfaces and contours), then its corners per round."""
    sec, family = rep["landscape"], BY_NAME["landscape"]
    if not sec["measured"]:
        return _section("landscape", "Loss landscape", _note(sec["note"]))
    body = _img(_plot_landscape(sec), "mean loss over the gradient-sign and random directions, per model")
    body += _note(f"The federation's mean cross-entropy (each image's clipped to {LOSS_BOUND:g} nats) on a grid of "
                  "perturbations along the sign of each image's input gradient and a random orthogonal sign "
                  "direction; the sites sent only sums per grid cell.", ok=True)
    heads = ["round"] + [c.header for c in family.columns]
    text = tuple(i + 1 for i, c in enumerate(family.columns) if c.spec == "text")
    rows = [[_e(c["round"]), *[_e(v) for v in query.table(family, [c], "-")[0]]] for c in sec["per_round"]]
    return _section("landscape", "Loss landscape", body + _table(heads, rows, "landscape", left=text))


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


SECTIONS = (("rounds", "Rounds"), ("robustness", "Robustness"), ("hardening", "Hardening"),
            *((f.name, f.name.capitalize()) for f in FAMILY_SECTIONS), ("landscape", "Landscape"),
            ("backdoor", "Backdoor"), ("inversion", "Inversion"), ("privacy", "Privacy"),
            ("configuration", "Configuration"))  # results first, the configuration after them


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
        _html_rounds(report), _html_robustness(report), _html_hardening(report),
        *(_html_family(report, f.name) for f in FAMILY_SECTIONS), _html_landscape(report),
        _html_backdoor(report), _html_inversion(report), _html_privacy(report), _html_run(report),
        "</main></body></html>",
    ]
    return "\n".join(parts)


def report_html(run: Mapping[str, Any]) -> str:
    return render_html(build_report(run))
