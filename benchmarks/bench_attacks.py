"""Benchmark of fedaegis.shared.attacks against torchattacks, ART and a bare torch PGD loop.

Run ``python benchmarks/bench_attacks.py`` (``--help`` for options). It trains a
SmallCNN and a MONAI ResNet-10 briefly on real BloodMNIST (8 classes, so the
targeted stages of AutoAttack are meaningful), takes a batch of 256 test images
and times, in one process with a fixed thread count, warm-up then best of
``--repeats`` (runs compared with each other interleaved):

* PGD-10 (ours, with and without per-sample early stopping) against a bare
  hand-written torch loop doing the same work (clean pass, 10 steps, final pass);
* ours against torchattacks and ART for FGSM, PGD, C&W, DeepFool, Square and
  AutoAttack with equal budgets (every timing includes what it takes to get the
  robust accuracy: clean and adversarial predictions);
* the early-stopping ensemble against its four attacks each run on all samples with
  their full budgets, and against the four run standalone with their own early stopping;
* the FMN robust-accuracy curve at 4 epsilons against PGD-10 per epsilon.

The library comparisons run on the SmallCNN; on ResNet-10 (about 90x the
compute) only PGD-10 and AutoAttack (and no FMN curve) unless ``--all``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fedaegis.shared.attacks import FMN, build_attack
from fedaegis.shared.attacks.base import attack_mode
from fedaegis.shared.models import build_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bloodmnist" / "bloodmnist.npz"
EPS = 4 / 255
L2_EPS = 0.5
CURVE_EPS = (1 / 255, 2 / 255, 4 / 255, 8 / 255)

warnings.filterwarnings("ignore")


def load(n_train: int, n_test: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    if not DATA.exists():
        sys.exit(f"dataset not found: {DATA}")
    with np.load(DATA) as d:
        def conv(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(a.astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()
        return (conv(d["train_images"][:n_train]), torch.from_numpy(d["train_labels"][:n_train, 0].astype(np.int64)),
                conv(d["test_images"][:n_test]), torch.from_numpy(d["test_labels"][:n_test, 0].astype(np.int64)))


def train(name: str, x: torch.Tensor, y: torch.Tensor, steps: int, batch: int) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(name, in_channels=3, num_classes=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3 if name == "cnn" else 1e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        i = torch.randint(0, x.shape[0], (batch,), generator=gen)
        loss = F.cross_entropy(model(x[i]), y[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    # re-estimate BatchNorm statistics for the final weights (Adam outruns the running means)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    with torch.no_grad():
        for _ in range(8):
            model(x[torch.randint(0, x.shape[0], (128,), generator=gen)])
    for m in bns:
        m.momentum = 0.1
    model.eval()
    for p in model.parameters():
        p.grad = None
    return model


def timed(fn: Callable[[], float], repeats: int, warmup: bool) -> tuple[float, float]:
    """Best wall time over ``repeats`` runs (after an optional warm-up) and the run's value."""
    if warmup:
        fn()
    best, value = math.inf, math.nan
    for _ in range(repeats):
        t = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t)
    return best, value


def robust_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor | np.ndarray,
              norm: str | None = None, eps: float | None = None) -> float:
    """Robust accuracy of an adversarial batch (minimum-norm outputs counted only within ``eps``)."""
    x_adv = torch.as_tensor(x_adv)
    with torch.inference_mode():
        ok = (model(x).argmax(1) == y) & (model(x_adv).argmax(1) == y)
        if norm is not None:
            d = (x_adv - x).flatten(1)
            size = d.norm(dim=1) if norm == "l2" else d.abs().amax(1)
            ok = (model(x).argmax(1) == y) & (ok | (size > eps * (1 + 1e-6)))
    return float(ok.float().mean())


def bare_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 10,
             only_correct: bool = False) -> float:
    """The hand-written baseline: clean pass, random start, ``steps`` signed steps, final pass.

    ``only_correct`` attacks only correctly classified inputs, the same work as our PGD
    without early stopping (misclassified inputs need no attack).
    """
    alpha = 2.5 * eps / steps
    n = x.shape[0]
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.inference_mode():
        clean = model(x).argmax(1) == y
    if only_correct:
        x, y = x[clean], y[clean]
    gen = torch.Generator().manual_seed(0)
    lo, hi = (x - eps).clamp(min=0), (x + eps).clamp(max=1)
    xa = torch.minimum(torch.maximum(x + (2 * torch.rand(x.shape, generator=gen) - 1) * eps, lo), hi)
    for _ in range(steps):
        xa.requires_grad_(True)
        loss = F.cross_entropy(model(xa), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, xa)
        xa = torch.minimum(torch.maximum(xa.detach() + alpha * g.sign(), lo), hi)
    with torch.inference_mode():
        adv = model(xa).argmax(1) == y
    for p in model.parameters():
        p.requires_grad_(True)
    if only_correct:
        return float(adv.sum()) / n
    return float((clean & adv).float().mean())


def ours(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **params) -> Callable[[], float]:
    atk = build_attack(name, **params)
    return lambda: atk.attack(model, x, y).robust_accuracy


def _stub_multiprocess() -> None:
    """ART's AutoAttack imports ``multiprocess`` even when it runs serially."""
    try:
        import multiprocess  # noqa: F401
    except ImportError:
        import types

        sys.modules["multiprocess"] = types.ModuleType("multiprocess")


def art_classifier(model: nn.Module, x: torch.Tensor):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                             nb_classes=8, clip_values=(0.0, 1.0))


def competitors(model: nn.Module, x: torch.Tensor, y: torch.Tensor, budgets: dict) -> dict[str, dict[str, Callable[[], float]]]:
    """Equal-budget runs per attack: {'ours': fn, 'torchattacks': fn, 'art': fn}."""
    import torchattacks as ta
    from art.attacks import evasion as E

    _stub_multiprocess()
    clf = art_classifier(model, x)
    xn, yn = x.numpy(), y.numpy()
    n = x.shape[0]
    b = budgets

    def ta_run(atk, norm=None, eps=None):
        return lambda: robust_of(model, x, y, atk(x, y), norm, eps)

    def art_run(atk, norm=None, eps=None):
        return lambda: robust_of(model, x, y, atk.generate(xn, yn), norm, eps)

    quiet = contextlib.redirect_stderr(io.StringIO())
    with quiet:
        art_aa = E.AutoAttack(clf, norm=np.inf, eps=EPS, eps_step=EPS / 4, batch_size=n, attacks=[
            E.AutoProjectedGradientDescent(clf, norm=np.inf, eps=EPS, eps_step=2 * EPS, max_iter=b["apgd_steps"],
                                           nb_random_init=1, batch_size=n, loss_type="cross_entropy", verbose=False),
            E.AutoProjectedGradientDescent(clf, norm=np.inf, eps=EPS, eps_step=2 * EPS, max_iter=b["apgd_steps"],
                                           nb_random_init=1, batch_size=n, loss_type="difference_logits_ratio",
                                           verbose=False),
            E.SquareAttack(clf, norm=np.inf, eps=EPS, max_iter=b["square_queries"], nb_restarts=1,
                           batch_size=n, verbose=False),
        ])
    return {
        "FGSM": {
            "ours": ours("fgsm", model, x, y, eps=EPS),
            "torchattacks": ta_run(ta.FGSM(model, eps=EPS)),
            "art": art_run(E.FastGradientMethod(clf, eps=EPS, batch_size=n)),
        },
        "PGD-10": {
            "ours": ours("pgd", model, x, y, eps=EPS, steps=10, alpha=EPS / 4),
            "torchattacks": ta_run(ta.PGD(model, eps=EPS, alpha=EPS / 4, steps=10)),
            "art": art_run(E.ProjectedGradientDescent(clf, eps=EPS, eps_step=EPS / 4, max_iter=10, batch_size=n,
                                                      verbose=False)),
        },
        "CW-L2": {
            "ours": ours("cw", model, x, y, eps=L2_EPS, binary_steps=1, steps=b["cw_steps"], c_init=1.0),
            "torchattacks": ta_run(ta.CW(model, c=1.0, steps=b["cw_steps"], lr=0.01), "l2", L2_EPS),
            "art": art_run(E.CarliniL2Method(clf, binary_search_steps=1, max_iter=b["cw_steps"], initial_const=1.0,
                                             batch_size=n, verbose=False), "l2", L2_EPS),
        },
        "DeepFool": {
            "ours": ours("deepfool", model, x, y, eps=L2_EPS, steps=50, overshoot=0.02),
            "torchattacks": ta_run(ta.DeepFool(model, steps=50, overshoot=0.02), "l2", L2_EPS),
            "art": art_run(E.DeepFool(clf, max_iter=50, epsilon=0.02, nb_grads=8, batch_size=n, verbose=False),
                           "l2", L2_EPS),
        },
        # Square: same seed everywhere (ART draws from NumPy's global generator); our
        # n_queries counts the initial query, torchattacks and ART add it on top (+1 each).
        "Square": {
            "ours": ours("square", model, x, y, eps=EPS, n_queries=b["square_queries"], seed=0),
            "torchattacks": ta_run(ta.Square(model, eps=EPS, n_queries=b["square_queries"], seed=0)),
            "art": _seeded(art_run(E.SquareAttack(clf, eps=EPS, max_iter=b["square_queries"], batch_size=n,
                                                  verbose=False))),
        },
        "AutoAttack": {
            "ours": ours("autoattack", model, x, y, eps=EPS, apgd_steps=b["apgd_steps"], fab_steps=b["fab_steps"],
                         n_target_classes=7, square_queries=b["square_queries"]),
            "torchattacks": ta_run(ta.MultiAttack([  # AutoAttack's stages with our budgets
                ta.APGD(model, eps=EPS, steps=b["apgd_steps"], seed=0),
                ta.APGDT(model, eps=EPS, steps=b["apgd_steps"], n_classes=8, seed=0),
                ta.FAB(model, eps=EPS, steps=b["fab_steps"], n_classes=8, multi_targeted=True, seed=0),
                ta.Square(model, eps=EPS, n_queries=b["square_queries"], seed=0)])),
            "art": art_run(art_aa),
        },
    }


def _seeded(fn: Callable[[], float], seed: int = 0) -> Callable[[], float]:
    """Seed NumPy's global generator before each run (ART's Square draws from it)."""
    def run() -> float:
        np.random.seed(seed)
        return fn()
    return run


def interleaved(libs: dict[str, Callable[[], float]], repeats: int, warmup: bool) -> dict[str, tuple[float, float]]:
    """Best-of-``repeats`` time and value per library, the libraries' runs interleaved so
    that load from other processes hits all of them alike."""
    if warmup:
        for fn in libs.values():
            fn()
    out = {lib: (math.inf, math.nan) for lib in libs}
    for _ in range(repeats):
        for lib, fn in libs.items():
            t = time.perf_counter()
            value = fn()
            out[lib] = (min(out[lib][0], time.perf_counter() - t), value)
    return out


def ensemble_vs_all(model: nn.Module, x: torch.Tensor, y: torch.Tensor, b: dict,
                    repeats: int, warmup: bool) -> list[tuple[str, float, float]]:
    """The early-stopping ensemble versus its four attacks each run on every sample.

    "On all samples" runs every stage on every sample with its full budget (the
    ensemble's ``early_stop=False``). The third row runs each stage standalone on
    every sample with its own per-sample early stopping (what torchattacks and ART do
    for Square), which isolates what the stage-wise protocol alone saves.
    """
    common = dict(apgd_steps=b["apgd_steps"], fab_steps=b["fab_steps"], n_target_classes=7,
                  square_queries=b["square_queries"])
    ens = build_attack("autoattack", eps=EPS, **common)
    flat = build_attack("autoattack", eps=EPS, early_stop=False, **common)
    stages = [atk for _, atk in ens.components()]

    def standalone() -> float:
        fooled = torch.zeros(x.shape[0], dtype=torch.bool)
        with attack_mode(model):
            for atk in stages:
                fooled |= atk.details(model, x, y).adv_pred != y
        return float((~fooled).float().mean())

    t_ens, r_ens = timed(lambda: ens.attack(model, x, y).robust_accuracy, repeats, warmup)
    t_flat, r_flat = timed(lambda: flat.attack(model, x, y).robust_accuracy, repeats, warmup)
    t_each, r_each = timed(standalone, repeats, warmup)
    return [("ensemble (early stop)", t_ens, r_ens), ("4 attacks on all samples", t_flat, r_flat),
            ("4 attacks, own early stop", t_each, r_each)]


def fmn_vs_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, fmn_steps: int,
               repeats: int, warmup: bool) -> tuple[float, list[float], float, dict, dict]:
    fmn = FMN(build_attack("fmn", eps=CURVE_EPS[-1]).threat, steps=fmn_steps)
    curve: dict = {}

    def run_curve() -> float:
        curve.clear()
        curve.update({e: r.robust_accuracy for e, r in fmn.curve(model, x, y, CURVE_EPS).items()})
        return 0.0

    t_fmn, _ = timed(run_curve, repeats, warmup)
    pgd_times, pgd_acc = [], {}
    for e in CURVE_EPS:
        atk = build_attack("pgd", eps=e, steps=10)
        t, acc = timed(lambda atk=atk: atk.attack(model, x, y).robust_accuracy, repeats, warmup)
        pgd_times.append(t)
        pgd_acc[e] = acc
    gap = max(abs(curve[e] - pgd_acc[e]) for e in CURVE_EPS)
    return t_fmn, pgd_times, gap, curve, pgd_acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="cnn,resnet10")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--all", action="store_true", help="library comparisons on ResNet-10 too")
    ap.add_argument("--apgd-steps", type=int, default=10, help="APGD steps (torchattacks' default)")
    ap.add_argument("--fab-steps", type=int, default=10)
    ap.add_argument("--square-queries", type=int, default=1000)
    ap.add_argument("--cw-steps", type=int, default=50)
    ap.add_argument("--fmn-steps", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    budgets = dict(apgd_steps=args.apgd_steps, fab_steps=args.fab_steps,
                   square_queries=args.square_queries, cw_steps=args.cw_steps)

    x_tr, y_tr, x, y = load(4000, args.batch)
    print(f"BloodMNIST batch {tuple(x.shape)}, eps={EPS:.4f} (Linf), {L2_EPS} (L2), "
          f"threads={args.threads}, best of {args.repeats}")
    summary: list[tuple[str, float, str]] = []
    for name in args.models.split(","):
        big = name != "cnn"
        t0 = time.perf_counter()
        model = train(name, x_tr, y_tr, steps=40 if big else 300, batch=32 if big else 64)
        reps = max(1, args.repeats - 1) if big else args.repeats
        warm = not big
        with torch.inference_mode():
            clean = float((model(x).argmax(1) == y).float().mean())
        print(f"\n== {name}: trained in {time.perf_counter() - t0:.0f}s, clean accuracy {clean:.3f}")
        if big:  # one global warm-up instead of one per method
            bare_pgd(model, x[:32], y[:32], EPS, steps=1)

        pgd = build_attack("pgd", eps=EPS, steps=10, seed=0)
        pgd_full = build_attack("pgd", eps=EPS, steps=10, seed=0, early_stop=False)
        res = interleaved({
            "bare torch loop": lambda: bare_pgd(model, x, y, EPS),
            "bare loop, correct inputs": lambda: bare_pgd(model, x, y, EPS, only_correct=True),
            "ours (early stop)": lambda: pgd.attack(model, x, y).robust_accuracy,
            "ours (no early stop)": lambda: pgd_full.attack(model, x, y).robust_accuracy,
        }, reps if big else 3 * reps, warm)
        print(f"{'PGD-10':28s} {'time s':>8s} {'robust':>7s}")
        for label, (t, r) in res.items():
            print(f"  {label:26s} {t:8.3f} {r:7.3f}")
        t_bare, t_bare_c = res["bare torch loop"][0], res["bare loop, correct inputs"][0]
        summary.append((f"{name}: PGD-10 ours / bare loop", res["ours (early stop)"][0] / t_bare, "<= 1.05"))
        summary.append((f"{name}: PGD-10 ours w/o early stop / bare loop on correct inputs",
                        res["ours (no early stop)"][0] / t_bare_c, "<= 1.05"))

        # minutes per run on ResNet-10: one run each is precise enough
        rows = ensemble_vs_all(model, x, y, budgets, 1 if big else reps, warm)
        print(f"{'AutoAttack stages':28s} {'time s':>8s} {'robust':>7s}")
        for label, t, r in rows:
            print(f"  {label:26s} {t:8.3f} {r:7.3f}")
        summary.append((f"{name}: 4 attacks on all / early-stop ensemble", rows[1][1] / rows[0][1], ">= 2"))
        summary.append((f"{name}: 4 attacks, own early stop / ensemble", rows[2][1] / rows[0][1], "(info)"))

        if not big or args.all:
            t_fmn, pgd_times, gap, curve, pgd_acc = fmn_vs_pgd(model, x, y, args.fmn_steps, reps, warm)
            print(f"FMN curve ({args.fmn_steps} steps) {t_fmn:.3f}s vs PGD-10 per eps "
                  + ", ".join(f"{t:.3f}s" for t in pgd_times))
            for e in CURVE_EPS:
                print(f"  eps={e * 255:.0f}/255  FMN {curve[e]:.3f}  PGD-10 {pgd_acc[e]:.3f}")
            summary.append((f"{name}: FMN curve / mean PGD-10 run", t_fmn / (sum(pgd_times) / len(pgd_times)), "<= 2"))
            summary.append((f"{name}: FMN curve / PGD-10 at all 4 eps", t_fmn / sum(pgd_times), "(info)"))
            summary.append((f"{name}: FMN vs PGD max gap (points)", 100 * gap, "<= 2"))

        comps = competitors(model, x, y, budgets)
        if big and not args.all:  # the two attacks; the rest costs hours on ResNet-10
            comps = {k: comps[k] for k in ("PGD-10", "AutoAttack")}
        print(f"{'attack':12s} {'library':13s} {'time s':>8s} {'robust':>7s}")
        for attack, libs in comps.items():
            # minutes per AutoAttack run on ResNet-10: one run each; FGSM is one pass: more runs
            n = 1 if big and attack == "AutoAttack" else 3 * reps if attack == "FGSM" else reps
            sink = io.StringIO()
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                res = interleaved(libs, n, warm)
            times = {lib: t for lib, (t, _) in res.items()}
            for lib, (t, r) in res.items():
                print(f"{attack:12s} {lib:13s} {t:8.3f} {r:7.3f}")
            if attack == "Square":  # strength compared too
                for lib, label in (("torchattacks", "torchattacks"), ("art", "ART")):
                    print(f"  Square time ours / {label}: {res['ours'][0] / res[lib][0]:.3f}, robust accuracy "
                          f"ours - {label}: {100 * (res['ours'][1] - res[lib][1]):+.1f} points")
                    summary.append((f"{name}: Square robust ours - {label} (points)",
                                    100 * (res["ours"][1] - res[lib][1]), "<= 1"))
            summary.append((f"{name}: {attack} ours / torchattacks", times["ours"] / times["torchattacks"], "<= 1.0"))
            summary.append((f"{name}: {attack} ours / ART", times["ours"] / times["art"], "<= 1.0"))

    print("\n== ratios")
    for label, value, target in summary:
        print(f"  {label:52s} {value:8.3f}   target {target}")


if __name__ == "__main__":
    main()
