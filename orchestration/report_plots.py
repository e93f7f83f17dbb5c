"""The report's plots: matplotlib on an Agg canvas (no display), embedded as base64 PNG ``data:`` URIs."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Mapping
from typing import Any

from ..shared.results.base import eps_display

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


def _series(rows: Iterable[Mapping[str, Any]], x: str, y: str) -> tuple[list[float], list[float]]:
    pts = [(r[x], r[y]) for r in rows if r.get(x) is not None and r.get(y) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def _plot_rounds(rounds: list[dict[str, Any]]) -> str | None:
    if not rounds:
        return None
    # train loss is class-weighted (class-weighting), test loss is not: separate axes, never one scale
    fig = _figure(11, 3.4)
    ax_acc, ax_loss, ax_train = fig.subplots(1, 3)
    for key, label, style in (("accuracy", "test accuracy", "o-"), ("train_accuracy", "train accuracy", "s--")):
        xs, ys = _series(rounds, "round", key)
        if xs:
            ax_acc.plot(xs, ys, style, label=label)
    xs, ys = _series(rounds, "round", "loss")
    if xs:
        ax_loss.plot(xs, ys, "o-", label="test loss")
    xs, ys = _series(rounds, "round", "train_loss")
    if xs:
        ax_train.plot(xs, ys, "s--", color="C1", label="train loss (class-weighted)")
    ax_acc.set(title="Accuracy per round", xlabel="round", ylabel="accuracy", ylim=(0, 1.02))
    ax_loss.set(title="Test loss per round", xlabel="round", ylabel="test loss")
    ax_train.set(title="Train loss per round", xlabel="round", ylabel="train loss (class-weighted)")
    for ax, what in ((ax_acc, "accuracy"), (ax_loss, "test loss"), (ax_train, "train loss")):
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
                ax.annotate(eps_display(r["epsilon"]), (r["robust_accuracy"], r["clean_accuracy"]),
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


def _plot_landscape(sec: dict[str, Any]) -> str:
    """Each model's mean-loss surface (3D, top) and contour (bottom), side by side on one colour scale."""
    import numpy as np

    models = sec["final"]
    grids = [np.array([[np.nan if v is None else v for v in row] for row in m["loss_grid"]], dtype=float)
             for m in models]
    finite = np.concatenate([g[np.isfinite(g)] for g in grids]) if grids else np.array([])
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1e-6
    fig = _figure(4.2 * len(models), 7.4)
    for k, (m, grid) in enumerate(zip(models, grids)):
        steps = np.linspace(0, (m["epsilon"] or 0.0) * 255, grid.shape[0])
        e2, e1 = np.meshgrid(steps, steps)  # rows: gradient sign (e1), columns: second direction (e2)
        ax3 = fig.add_subplot(2, len(models), k + 1, projection="3d")
        ax3.plot_surface(e1, e2, grid, cmap="viridis", vmin=lo, vmax=hi, edgecolor="k", linewidth=0.2)
        ax3.set(title=f"{m['model']} (round {sec['final_round']})", xlabel="sign(grad) x/255",
                ylabel="random x/255", zlabel="mean loss", zlim=(lo, hi))
        ax3.tick_params(labelsize=7)
        ax = fig.add_subplot(2, len(models), len(models) + k + 1)
        filled = ax.contourf(e1, e2, grid, levels=np.linspace(lo, hi, 13), cmap="viridis")
        ax.contour(e1, e2, grid, levels=np.linspace(lo, hi, 13), colors="k", linewidths=0.4)
        ax.set(xlabel="eps along sign(grad) (x/255)", ylabel="eps along random direction (x/255)",
               title=f"{m['model']}: mean loss")
        fig.colorbar(filled, ax=ax, shrink=0.85, format="%.2f")
    return _png(fig)
