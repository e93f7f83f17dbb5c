"""``fedaegis reproduce survey``: the robustness survey's cited findings, reproduced on real data.

For each finding the survey cites it states the paper's claim, what this run measured and
whether the direction holds, as a terminal table, Markdown (``--output``) and a self-contained
HTML page (``--html``, the report's style):

* Ma et al.: vulnerability grows with capacity and resolution (PGD-10 at 1/255 on BloodMNIST:
  SmallCNN against ResNet-18 trained alike, SmallCNN at 28 px against 64 px, the images
  upsampled bilinearly since the stored BloodMNIST is 28 px);
* Hirano et al.: universal perturbations fool most inputs (non-targeted fooling rate at 4, 8
  and 15/255; targeted hit rate towards class 0 at 15/255);
* Paul et al.: FGSM at 8/255 collapses a standard PneumoniaMNIST model, adversarial training
  recovers much of it and an ensemble at least as much;
* detectors (Ma et al., Feinman et al.): Mahalanobis and KD+BU ROC AUC at 2/255 and 8/255.

Federated where the finding allows: one simulated federation of PneumoniaMNIST hospitals
(:func:`federated_config`: a defence comparison of a standard and a TRADES member, FGSM and a
universal perturbation at every site, a Mahalanobis detector) measures Paul et al.'s drop and
recovery, Hirano et al.'s non-targeted rate and the detector's AUC, read back from the run
store (:func:`federated_findings`). What one run config cannot ask for, or where a federation
adds nothing to a property of one trained model, runs centrally (one process, one thread) and
each row says why.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

ROOT = Path(__file__).resolve().parents[1]
PNEUMONIA = ROOT / "shared" / "data" / "embedded" / "pneumoniamnist.npz"
DEFAULT_DATA = ROOT.parent / "shared" / "data"
UAP_EPS = (4, 8, 15)  # Hirano et al.'s budgets, in /255
DETECTOR_EPS = (2, 8)  # central
FEDERATED_DETECTOR_EPS = (4, 8)  # the federation's smallest budget is UAP_EPS's
FGSM_EPS = 8
FEDERATED_EPS = "4/255,8/255,15/255"  # every budget a federated row reads
# The federation's hardened member trains from scratch beside the standard one: PGD-AT at 8/255
# collapsed to the majority class there on PneumoniaMNIST (clean = robust = 0.64 over 3 sites, 2
# rounds; centrally, from scratch on one site's share, at 4/255 too); TRADES keeps a clean-loss term
# and learns (centrally, same share: clean 0.81, PGD-10 8/255 0.54). The central ensemble's members
# are PGD-AT fine-tuned from the standard model.
FEDERATED_HARDENING = "trades"
# The simulated hospitals' policy: the built-in one, except that counts are released exact (public
# benchmark images, no patient behind them; the findings are about the models, not about DP noise)
# and the detector's 200-bin score histograms may leave (the default allows 20 bins).
SITE_POLICY = """[release]
max-histogram-bins = 200

[dp]
required = false
"""


@dataclass(frozen=True)
class Finding:
    """One row: the survey's claim, the paper's figure, ours, and whether the direction holds.

    ``setting`` says where it was measured: ``federated`` (read from the stored run) or
    ``central`` with the reason the federation could not, or need not, measure it.
    """

    finding: str
    paper: str
    ours: str
    holds: bool
    setting: str
    figures: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """Sizes of one reproduction (``QUICK`` smoke run or ``FULL``)."""

    name: str
    n_train: int  # central training images per model
    n_test: int  # central test images attacked
    epochs: int
    capacity_model: str | None  # the larger model of Ma et al.'s capacity row (None: row skipped)
    capacity_train: int  # training images of the capacity pair (ResNet-18 on a CPU is slow)
    hardened_epochs: int  # fine-tuning epochs of each central PGD-AT member
    sites: int
    rounds: int
    local_epochs: int
    attack_samples: int  # per site (one of the site policy's evaluation sizes)


QUICK = Plan("quick", 2000, 200, 5, None, 0, 1, 2, 2, 1, 64)
FULL = Plan("full", 3000, 300, 5, "resnet18", 1500, 1, 3, 2, 2, 128)


# -- the table, Markdown and HTML ------------------------------------------------------------
def markdown(findings: Sequence[Finding]) -> str:
    """The findings as a Markdown table, a last line counting the directions that hold."""
    lines = ["| finding | setting | paper | ours | holds |", "|---|---|---|---|---|"]
    lines += [f"| {f.finding} | {f.setting} | {f.paper} | {f.ours} | {'yes' if f.holds else 'no'} |"
              for f in findings]
    lines.append(f"\n{sum(f.holds for f in findings)}/{len(findings)} directions hold.")
    return "\n".join(lines) + "\n"


def rich_table(findings: Sequence[Finding]):
    """The terminal table (Rich)."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="the survey's findings, reproduced", show_lines=True)
    for col in ("finding", "setting", "paper", "ours", "holds"):
        table.add_column(col, overflow="fold")
    for f in findings:
        table.add_row(*(escape(t) for t in (f.finding, f.setting, f.paper, f.ours)),
                      "[green]yes[/]" if f.holds else "[red]no[/]")
    return table


def _plot_uap(findings: Sequence[Finding]) -> str | None:
    """Fooling rate against budget for each non-targeted UAP row, the paper's 80% drawn."""
    from .report_plots import _figure, _png

    rows = [f for f in findings if any(k.startswith("fooling@") for k in f.figures)]
    if not rows:
        return None
    fig = _figure(6.5, 3.4)
    ax = fig.subplots()
    for f in rows:
        pts = sorted((int(k.split("@")[1]), v) for k, v in f.figures.items() if k.startswith("fooling@"))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"{f.finding.split('(')[-1].rstrip(')')}, "
                f"{f.setting.split(':')[0]}")
    ax.axhline(0.8, color="grey", ls="--", label="paper: > 80%")
    ax.set_xlabel("eps (/255)")
    ax.set_ylabel("fooling rate")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    return _png(fig)


def survey_html(findings: Sequence[Finding], meta: Mapping[str, Any]) -> str:
    """A self-contained page (the report's CSS and plot helpers; no script, no URL)."""
    from .report_html import CSS, _e, _img, _note, _section, _table

    holds = sum(f.holds for f in findings)
    rows = [[_e(f.finding), _e(f.setting), _e(f.paper), _e(f.ours),
             '<b style="color:#2e7d32">yes</b>' if f.holds else '<b style="color:#c62828">no</b>'] for f in findings]
    body = _table(["finding", "setting", "paper", "ours", "holds"], rows, "survey", left=5)
    body += _note(f"{holds} of {len(findings)} directions hold.", ok=holds == len(findings))
    plot = _plot_uap(findings)
    if plot:
        body += "<h3>Universal perturbations (Hirano et al.)</h3>" + _img(plot, "UAP fooling rate against eps")
    meta_rows = [[_e(k), _e(v)] for k, v in meta.items()]
    title = "fedaegis: the survey's findings, reproduced"
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
        'style-src \'unsafe-inline\'">',
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        f"<header><h1>{_e(title)}</h1><p class=\"meta\">{_e(meta.get('command', ''))}</p></header><main>",
        _section("findings", "Findings", body),
        _section("run", "This reproduction", _table(["field", "value"], meta_rows, "run", left=2)),
        "</main></body></html>",
    ])


# -- central measurements --------------------------------------------------------------------
def _subset(path: Path, n_train: int, n_test: int, size: int | None = None):
    import torch
    import torch.nn.functional as F

    from ..shared.data import load_medmnist

    train, test = load_medmnist(path, "train"), load_medmnist(path, "test")
    gen = torch.Generator().manual_seed(0)
    train = train.subset(torch.randperm(len(train), generator=gen)[:n_train])
    test = test.subset(torch.randperm(len(test), generator=gen)[:n_test])
    for s in (train, test):
        s.images = s.images[:]  # decoded once: a few thousand images, attacked and scored many times
        if size is not None:
            s.images = F.interpolate(s.images, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return train, test


def _train(name: str, data, epochs: int, seed: int = 0, **kwargs: Any):
    import torch

    from ..shared.models import build_model
    from ..shared.training import train_classifier

    torch.manual_seed(seed)
    model = build_model(name, in_channels=data.images.shape[1], num_classes=data.num_classes, norm="group", **kwargs)
    train_classifier(model, data, epochs=epochs, batch_size=64, lr=1e-3)
    return model.eval()


def _counts(model, test, attack: str | dict, eps: float) -> dict:
    from ..shared.attacks import evaluate_attacks

    (counts,) = evaluate_attacks(model, (test.images, test.labels), [attack], [eps]).values()
    return counts


def _robust(model, test, attack: str | dict, eps: float) -> float:
    c = _counts(model, test, attack, eps)
    return c["robust_correct"] / c["n"]


def _clean(model, test) -> float:
    import torch

    with torch.no_grad():
        return float((model(test.images).argmax(1) == test.labels).float().mean())


def _uap_rates(model, test) -> tuple[dict[int, float], float]:
    """Non-targeted fooling rates at :data:`UAP_EPS` and the targeted (class 0) hit rate at 15/255."""
    from ..shared.attacks import evaluate_attacks

    res = evaluate_attacks(model, (test.images, test.labels), ["universal"], [e / 255 for e in UAP_EPS])
    rates = {e: res[("universal", e / 255)]["fooled"] / res[("universal", e / 255)]["n"] for e in UAP_EPS}
    c = _counts(model, test, {"name": "universal", "targeted": True, "target": 0}, 15 / 255)
    return rates, c["target_hits"] / c["n"]


def _uap_finding(label: str, rates: Mapping[int, float], setting: str) -> Finding:
    return Finding(f"Hirano et al.: UAPs fool most inputs ({label})", "non-targeted > 80%",
                   ", ".join(f"{e}/255 {r:.2f}" for e, r in rates.items()), max(rates.values()) > 0.8, setting,
                   {f"fooling@{e}": r for e, r in rates.items()})


WHY_MODEL = "central: a property of one trained model; federating its training adds nothing to the comparison"
WHY_TARGETED = "central: a run has one universal attack, non-targeted (federated below)"
WHY_BLOOD = "central: the federated run is PneumoniaMNIST's"


def central_findings(plan: Plan, blood_path: Path, log: Callable[[str], None]) -> list[Finding]:
    """Every finding measured centrally (one process), each row saying why it is not federated."""
    import torch

    from ..shared.attacks import build_attack
    from ..shared.models.registry import FULL_STEM_SIZE
    from ..shared.detection import KDBUDetector, MahalanobisDetector, detection_scores
    from ..shared.detection.kd_bu import rank_auc
    from ..shared.hardening import build_hardening
    from ..shared.models.defence_systems import LogitEnsemble
    from ..shared.training import train_classifier
    from ..shared.training.objectives import balanced_weights

    out: list[Finding] = []
    train28, test28 = _subset(blood_path, plan.n_train, plan.n_test)
    cnn = _train("cnn", train28, plan.epochs)
    r_cnn = _robust(cnn, test28, "pgd", 1 / 255)
    log(f"BloodMNIST SmallCNN 28 px: clean {_clean(cnn, test28):.3f}, PGD-10 1/255 robust {r_cnn:.3f}")

    # Ma et al.: capacity (both models trained alike on the same images) and resolution
    if plan.capacity_model:
        cap_train = train28.subset(torch.arange(plan.capacity_train))
        small = _train("cnn", cap_train, plan.epochs)
        # the ImageNet stem (7x7 stride 2, max pooling) Ma et al.'s ResNets have: 16 times cheaper at 28 px
        large = _train(plan.capacity_model, cap_train, plan.epochs, image_size=FULL_STEM_SIZE)
        r_small, r_large = _robust(small, test28, "pgd", 1 / 255), _robust(large, test28, "pgd", 1 / 255)
        c_small, c_large = _clean(small, test28), _clean(large, test28)
        log(f"capacity ({plan.capacity_train} images, {plan.epochs} epochs): SmallCNN clean {c_small:.3f} "
            f"robust {r_small:.3f}; {plan.capacity_model} clean {c_large:.3f} robust {r_large:.3f}")
        out.append(Finding("Ma et al.: larger models are more vulnerable (BloodMNIST)", "ResNet below small CNN",
                           f"PGD-10 1/255 robust (clean): SmallCNN {r_small:.2f} ({c_small:.2f}), "
                           f"{plan.capacity_model} {r_large:.2f} ({c_large:.2f})",
                           r_large < r_small and r_large < c_large, WHY_MODEL,
                           {"cnn": r_small, plan.capacity_model: r_large}))
    train64, test64 = _subset(blood_path, plan.n_train, plan.n_test, size=64)
    cnn64 = _train("cnn", train64, plan.epochs)
    r_64 = _robust(cnn64, test64, "pgd", 1 / 255)
    log(f"BloodMNIST SmallCNN 64 px: clean {_clean(cnn64, test64):.3f}, robust {r_64:.3f}")
    out.append(Finding("Ma et al.: higher resolution is more vulnerable (BloodMNIST)", "64 px below 28 px",
                       f"PGD-10 1/255 robust: 28 px {r_cnn:.2f}, 64 px {r_64:.2f}", r_64 < r_cnn, WHY_MODEL,
                       {"28px": r_cnn, "64px": r_64}))

    # Hirano et al.: universal perturbations
    pneu_train, pneu_test = _subset(PNEUMONIA, plan.n_train, plan.n_test)
    pneu = _train("cnn", pneu_train, plan.epochs)
    for label, model, test in (("BloodMNIST", cnn, test28), ("PneumoniaMNIST", pneu, pneu_test)):
        rates, hit = _uap_rates(model, test)
        log(f"{label} UAP fooling rates {rates}, targeted hits at 15/255 {hit:.3f}")
        if label == "BloodMNIST":
            out.append(_uap_finding(label, rates, WHY_BLOOD))
        out.append(Finding(f"Hirano et al.: targeted UAP ({label})", "most inputs to the target",
                           f"15/255 hits (class 0) {hit:.2f}", hit > 0.5, WHY_TARGETED, {"hits@15": hit}))

    # Paul et al.: an ensemble of hardened models alone (the federation's ensemble holds the standard member too)
    weights = balanced_weights(pneu_train.labels, pneu_train.num_classes)
    hardened = []
    for seed in range(3):
        member = copy.deepcopy(pneu)  # fine-tuned from the standard model, class-weighted: no majority collapse
        torch.manual_seed(seed)
        train_classifier(member, pneu_train, build_hardening("pgd-at", eps=8 / 255, steps=3), class_weights=weights,
                         epochs=plan.hardened_epochs, batch_size=64, lr=1e-3)
        hardened.append(member.eval())
    ensemble = LogitEnsemble(hardened).eval()
    r_std = _robust(pneu, pneu_test, "fgsm", FGSM_EPS / 255)
    r_at, r_ens = (_robust(m, pneu_test, "fgsm", FGSM_EPS / 255) for m in (hardened[0], ensemble))
    c_at, c_ens = _clean(hardened[0], pneu_test), _clean(ensemble, pneu_test)
    majority = float(torch.bincount(pneu_test.labels).max()) / len(pneu_test)
    log(f"PneumoniaMNIST FGSM 8/255: standard {_clean(pneu, pneu_test):.3f} -> {r_std:.3f}, PGD-AT {r_at:.3f} "
        f"(clean {c_at:.3f}), ensemble of {len(hardened)} {r_ens:.3f} (clean {c_ens:.3f}); majority {majority:.3f}")
    out.append(Finding(
        "Paul et al.: an ensemble of hardened models recovers at least as much (PneumoniaMNIST)",
        "ensemble >= one hardened model",
        f"FGSM 8/255 robust (clean): standard {r_std:.2f}, PGD-AT {r_at:.2f} ({c_at:.2f}), ensemble of "
        f"{len(hardened)} {r_ens:.2f} ({c_ens:.2f}); majority class {majority:.2f}",
        r_at > r_std and r_ens >= r_at - 1 / len(pneu_test) and majority < min(c_at, c_ens) and r_at < c_at,
        "central: the federation's ensemble holds every member, the standard one too",
        {"standard": r_std, "pgd-at": r_at, "ensemble": r_ens}))

    # detectors, on correctly classified test images; KD+BU's combiner fitted on held-out calibration images
    cal = _subset(blood_path, plan.n_train + plan.n_test, 0)[0].subset(
        torch.arange(plan.n_train, plan.n_train + plan.n_test))
    half = len(cal) // 2
    adv = [build_attack("pgd", eps=e, steps=10, early_stop=False).attack(cnn, cal.images[s], cal.labels[s]).x_adv
           for e, s in ((2 / 255, slice(0, half)), (8 / 255, slice(half, None)))]
    detectors = (("Mahalanobis", MahalanobisDetector(cnn).fit(train28)),
                 ("KD+BU", KDBUDetector(cnn).fit(train28).fit_combiner(cal.images, adv)))
    for name, det in detectors:
        aucs = {round(e * 255): rank_auc(c, a) for e, (c, a) in
                detection_scores(det, cnn, (test28.images, test28.labels), [e / 255 for e in DETECTOR_EPS]).items()}
        log(f"BloodMNIST {name} ROC AUC {aucs}")
        out.append(_detector_finding(name, "BloodMNIST", aucs, "central: the paper's dataset; a run has one detector "
                                     "(Mahalanobis, federated below)"))
    return out


def _detector_finding(name: str, label: str, aucs: Mapping[int, float | None], setting: str) -> Finding:
    """AUC at the smallest and the largest budget of ``aucs``; None where no adversarial input fooled the model."""
    low, high = min(aucs), max(aucs)
    shown = ", ".join(f"{e}/255 " + ("n/a (nothing fooled)" if v is None else f"{v:.2f}") for e, v in aucs.items())
    a_low, a_high = aucs[low], aucs[high]
    holds = a_high is not None and a_high > 0.5 and (a_low is None or a_high >= a_low)
    return Finding(f"{name} detects adversarial inputs ({label})", f"AUC well above 0.5, higher at {high}/255",
                   f"ROC AUC {shown}", holds, setting, {f"auc@{e}": v for e, v in aucs.items() if v is not None})


# -- federated measurements ------------------------------------------------------------------
def federated_config(plan: Plan, dataset: str = "embedded:pneumoniamnist") -> dict[str, Any]:
    """The run config of the survey's federation: every federated row comes from this one run.

    A defence comparison (a standard and a :data:`FEDERATED_HARDENING` member, class-weighted) with FGSM and a
    non-targeted universal perturbation on the standard member at every site, and a
    Mahalanobis detector watching it; the attacks run in the final round.
    """
    return {"num-server-rounds": plan.rounds, "local-epochs": plan.local_epochs, "batch-size": 64,
            "learning-rate": 1e-3, "dataset": dataset, "model": "cnn", "seed": 0, "min-sites": plan.sites,
            "defence-models": f"none,{FEDERATED_HARDENING}", "hardening-eps": 8 / 255, "hardening-steps": 3,
            "attacks": "fgsm,universal", "epsilons": FEDERATED_EPS, "attack-samples": plan.attack_samples,
            "detector": "mahalanobis", "router-hardened": FEDERATED_HARDENING, "run-name": f"survey-findings-{plan.name}"}


def run_federation(plan: Plan, db_url: str | None, dataset: str = "embedded:pneumoniamnist") -> str:
    """Simulate :func:`federated_config` with ``plan.sites`` hospitals under :data:`SITE_POLICY`; the run's uuid."""
    import tempfile

    from .simulation import SimulationResources, simulate

    overrides = federated_config(plan, dataset)
    if db_url:
        overrides["db-url"] = db_url
    threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # the Ray actors inherit it: no oversubscribed cores
    try:
        with tempfile.TemporaryDirectory(prefix="fedaegis-survey-") as tmp:
            policy = Path(tmp) / "site-policy.toml"
            policy.write_text(SITE_POLICY)
            return simulate(overrides, num_sites=plan.sites, resources=SimulationResources(), site_policy=str(policy))
    finally:
        if threads is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = threads


def _at(cells: Sequence[Mapping[str, Any]], eps: int, **match: str) -> Mapping[str, Any]:
    """The one cell at ``eps``/255 whose fields equal ``match``."""
    found = [c for c in cells if c.get("epsilon") is not None and abs(c["epsilon"] - eps / 255) < 1e-6
             and all(c.get(k) == v for k, v in match.items())]
    if len(found) != 1:
        raise LookupError(f"the run stored {len(found)} cells for {match} at {eps}/255 (expected 1)")
    return found[0]


def majority_share(dataset: str) -> float:
    """The largest class's share of a MedMNIST file's test split (``embedded:<name>`` or a path).

    A hardened model that predicts one class scores exactly this, clean and attacked alike: its
    "robustness" is no evidence. The files are public benchmark data the orchestrator holds too.
    """
    import numpy as np

    path = ROOT / "shared" / "data" / "embedded" / f"{dataset.split(':', 1)[1]}.npz" if dataset.startswith(
        "embedded:") else Path(dataset)
    labels = np.load(path)["test_labels"].reshape(-1)
    return float(np.bincount(labels).max() / len(labels))


def federated_findings(run: Mapping[str, Any], majority: float = 0.0) -> list[Finding]:
    """The federated rows, from a stored run of :func:`federated_config` (its final round).

    ``majority``: :func:`majority_share` of the test split. A hardened model counts as recovering
    only if it beats that clean and can be fooled at all (a constant predictor never is).
    """
    from ..shared.results import query

    rnd = run["rounds"][-1]
    attacks, detection = query.cells(rnd, "attacks"), query.cells(rnd, "detection")
    defences = query.cells(rnd, "hardening") + query.cells(rnd, "defences")
    sites = len(rnd.get("sites", {})) or run.get("config", {}).get("num-sites")
    where = f"federated: {sites} sites, run {str(run['uuid'])[:8]}, round {rnd['number']}"
    fgsm = _at(attacks, FGSM_EPS, attack="fgsm")
    std = _at(defences, FGSM_EPS, threat="white-box", system="none")
    hard = _at(defences, FGSM_EPS, threat="white-box", system=FEDERATED_HARDENING)
    ens = _at(defences, FGSM_EPS, threat="adaptive", system="ensemble")
    n = fgsm["n_count"]
    out = [
        Finding("Paul et al.: FGSM collapses a standard model (PneumoniaMNIST)", "large drop at 8/255",
                f"clean {fgsm['clean_accuracy']:.2f} -> FGSM {fgsm['robust_accuracy']:.2f} (n {n:.0f})",
                fgsm["clean_accuracy"] - fgsm["robust_accuracy"] > 0.3, where,
                {"clean": fgsm["clean_accuracy"], "fgsm": fgsm["robust_accuracy"]}),
        Finding("Paul et al.: adversarial training recovers (PneumoniaMNIST)", "hardened model well above standard",
                f"PGD-10 8/255 robust (clean): standard {std['robust_accuracy']:.2f} ({std['clean_accuracy']:.2f}), "
                f"{FEDERATED_HARDENING} {hard['robust_accuracy']:.2f} ({hard['clean_accuracy']:.2f}); FGSM on the standard "
                f"{fgsm['robust_accuracy']:.2f}; majority class {majority:.2f}",
                hard["robust_accuracy"] > max(std["robust_accuracy"], fgsm["robust_accuracy"])
                and majority < hard["clean_accuracy"] and hard["robust_accuracy"] < hard["clean_accuracy"], where,
                {"standard": std["robust_accuracy"], FEDERATED_HARDENING: hard["robust_accuracy"]}),
        Finding("Paul et al.: an ensemble recovers at least as much (PneumoniaMNIST)", "ensemble >= one hardened model",
                f"adaptive PGD-10 8/255 robust: ensemble of standard + {FEDERATED_HARDENING} "
                f"{ens['robust_accuracy']:.2f} (clean {ens['clean_accuracy']:.2f}), {FEDERATED_HARDENING} alone "
                f"{hard['robust_accuracy']:.2f}",
                ens["robust_accuracy"] >= hard["robust_accuracy"] - 1 / max(ens["n_count"], 1), where,
                {"ensemble": ens["robust_accuracy"], FEDERATED_HARDENING: hard["robust_accuracy"]}),
    ]
    rates = {e: _at(attacks, e, attack="universal")["fooled_count"] / _at(attacks, e, attack="universal")["n_count"]
             for e in UAP_EPS}
    out.append(_uap_finding("PneumoniaMNIST", rates, where))
    aucs = {e: _at(detection, e, detector="mahalanobis").get("roc_auc") for e in FEDERATED_DETECTOR_EPS}
    out.append(_detector_finding("Mahalanobis", "PneumoniaMNIST", aucs, where))
    return out


# -- the command -----------------------------------------------------------------------------
def reproduce(plan: Plan, data: Path, *, federated: bool = True, db_url: str | None = None,
              log: Callable[[str], None] = print) -> tuple[list[Finding], dict[str, Any]]:
    """Measure every finding (central, then the federation); the rows and what the page says of the run."""
    import torch

    from ..shared.run.config import default_db_url
    from ..shared.store import RunStore

    blood_path = data / "bloodmnist" / "bloodmnist.npz"
    if not blood_path.is_file():
        raise FileNotFoundError(f"--data: {blood_path} not found")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    loads = [os.getloadavg()[0]]
    start = time.perf_counter()

    def timed(msg: str) -> None:
        loads.append(os.getloadavg()[0])
        log(f"[{time.perf_counter() - start:6.0f}s] {msg}")

    try:
        findings = central_findings(plan, blood_path, timed)
        central_s = time.perf_counter() - start
        meta: dict[str, Any] = {"mode": plan.name, "plan": json.dumps(asdict(plan)), "data": str(data),
                                "central seconds": round(central_s)}
        if federated:
            uuid = run_federation(plan, db_url)
            store = RunStore(db_url or default_db_url())
            try:
                run = store.get_run(uuid)
            finally:
                store.engine.dispose()
            fed = federated_findings(run, majority_share(federated_config(plan)["dataset"]))
            for f in fed:
                timed(f"{f.finding}: {f.ours}")
            findings += fed
            meta.update({"federated run": uuid, "federated seconds": round(time.perf_counter() - start - central_s),
                         "federated config": json.dumps(federated_config(plan))})
    finally:
        torch.set_num_threads(threads)
    loads.append(os.getloadavg()[0])
    meta.update({"wall seconds": round(time.perf_counter() - start), "cores": os.cpu_count(),
                 "load (1 min) mean / max": f"{sum(loads) / len(loads):.1f} / {max(loads):.1f}",
                 "directions hold": f"{sum(f.holds for f in findings)}/{len(findings)}"})
    return findings, meta


def survey(
    quick: Annotated[bool, typer.Option("--quick", help="Smaller central sets, no capacity row, 2 sites x 2 rounds.")] = False,
    data: Annotated[Path, typer.Option("--data", help="Folder holding bloodmnist/bloodmnist.npz.")] = DEFAULT_DATA,
    output: Annotated[Path | None, typer.Option("--output", help="Also write the table as Markdown.")] = None,
    html: Annotated[Path | None, typer.Option("--html", help="Also write a self-contained HTML page.")] = None,
    as_json: Annotated[Path | None, typer.Option("--json", help="Also write the rows and run facts as JSON.")] = None,
    central_only: Annotated[bool, typer.Option("--central-only", help="Skip the federation.")] = False,
    db_url: Annotated[str | None, typer.Option("--db-url", help="Database of the federated run (default: fedaegis').")] = None,
) -> None:
    """Reproduce the survey's cited findings on real data, federated where the finding allows."""
    import sys

    from .terminal import fail, out

    try:
        findings, meta = reproduce(QUICK if quick else FULL, data, federated=not central_only, db_url=db_url,
                                   log=lambda m: print(m, flush=True))
    except FileNotFoundError as exc:
        fail(str(exc))
    meta = {"command": "fedaegis reproduce survey " + " ".join(sys.argv[3:]) if sys.argv[1:3] == ["reproduce", "survey"]
            else " ".join(sys.argv), **meta}
    out.print(rich_table(findings))
    out.print(f"{meta['directions hold']} directions hold; {meta['wall seconds']} s, load {meta['load (1 min) mean / max']}")
    if output:
        output.write_text(markdown(findings))
    if html:
        html.write_text(survey_html(findings, meta), encoding="utf-8")
    if as_json:
        as_json.write_text(json.dumps({"findings": [asdict(f) for f in findings], "meta": meta}, indent=1))


def register(app: typer.Typer) -> None:
    """Add ``reproduce survey`` to ``app`` (a second call is a no-op)."""
    if any(g.name == "reproduce" for g in app.registered_groups):
        return
    group = typer.Typer(help="Reproduce published findings with this project's own library.", no_args_is_help=True)
    group.command("survey")(survey)
    app.add_typer(group, name="reproduce")
