"""Reproduce the robustness survey's cited findings with the project's own library, on real data.

Run ``python benchmarks/survey_findings.py`` (``--quick`` for a smoke run, ``--output
FILE.md`` to keep the table). For each finding the survey cites it prints the paper's
claim, what this run measured and whether the direction holds:

* Ma et al.: vulnerability grows with capacity and resolution (PGD-10 at 1/255 on
  BloodMNIST: SmallCNN against ResNet-18, and SmallCNN at 28 px against 64 px, the
  images upsampled bilinearly since the stored BloodMNIST is 28 px);
* Hirano et al.: universal perturbations fool most inputs (non-targeted fooling rate at
  4, 8 and 15/255 on BloodMNIST and PneumoniaMNIST; targeted hit rate towards class 0);
* Paul et al.: FGSM at 8/255 collapses a standard PneumoniaMNIST model, PGD-AT recovers
  much of it and an ensemble of three PGD-AT models at least as much;
* detectors (Ma et al., Feinman et al.): Mahalanobis and KD+BU ROC AUC at 2/255 and
  8/255 on BloodMNIST, PGD-10 on correctly classified test images.

Everything runs centrally (one process, one thread); the federated versions of these
measurements are the run-config options in README.md (``attacks``, ``defence-models``,
``detector``). The paper column states the published claim as the survey reports it.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fedaegis.shared.attacks import build_attack, evaluate_attacks
from fedaegis.shared.data import ImageSet, load_medmnist
from fedaegis.shared.models.defence_systems import LogitEnsemble
from fedaegis.shared.detection import KDBUDetector, MahalanobisDetector, detection_scores
from fedaegis.shared.detection.kd_bu import rank_auc
from fedaegis.shared.hardening import build_hardening
from fedaegis.shared.models import build_model
from fedaegis.shared.training import train_classifier

ROOT = Path(__file__).resolve().parents[1]
PNEUMONIA = ROOT / "shared" / "data" / "embedded" / "pneumoniamnist.npz"


def _subset(path: Path, n_train: int, n_test: int, size: int | None = None) -> tuple[ImageSet, ImageSet]:
    train, test = load_medmnist(path, "train"), load_medmnist(path, "test")
    gen = torch.Generator().manual_seed(0)
    train = train.subset(torch.randperm(len(train), generator=gen)[:n_train])
    test = test.subset(torch.randperm(len(test), generator=gen)[:n_test])
    if size is not None:
        for s in (train, test):
            s.images = F.interpolate(s.images, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return train, test


def _train(name: str, data: ImageSet, epochs: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model(name, in_channels=data.images.shape[1], num_classes=data.num_classes, norm="group")
    train_classifier(model, data, epochs=epochs, batch_size=64, lr=1e-3)
    return model.eval()


def _robust(model: nn.Module, test: ImageSet, attack: str | dict, eps: float) -> tuple[float, dict]:
    (counts,) = evaluate_attacks(model, (test.images, test.labels), [attack], [eps]).values()
    return counts["robust_correct"] / counts["n"], counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--quick", action="store_true", help="2000 training images, no ResNet-18")
    parser.add_argument("--output", type=Path, help="also write the table as Markdown")
    args = parser.parse_args()
    torch.set_num_threads(1)
    n_train, n_test, epochs = (2000, 200, 5) if args.quick else (3000, 300, 6)
    blood_path = args.data / "bloodmnist" / "bloodmnist.npz"
    if not blood_path.is_file():
        sys.exit(f"--data: {blood_path} not found")
    rows: list[tuple[str, str, str, bool]] = []
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.0f}s] {msg}", flush=True)

    # Ma et al.: capacity and resolution
    train28, test28 = _subset(blood_path, n_train, n_test)
    cnn = _train("cnn", train28, epochs)
    r_cnn, c = _robust(cnn, test28, "pgd", 1 / 255)
    log(f"BloodMNIST SmallCNN 28 px: clean {c['clean_correct'] / c['n']:.3f}, PGD-10 1/255 robust {r_cnn:.3f}")
    if not args.quick:
        r_res, _ = _robust(_train("resnet18", train28, epochs), test28, "pgd", 1 / 255)
        log(f"BloodMNIST ResNet-18 28 px: robust {r_res:.3f}")
        rows.append(("Ma et al.: larger models are more vulnerable", "ResNet below small CNN",
                     f"PGD-10 1/255: CNN {r_cnn:.2f}, ResNet-18 {r_res:.2f}", r_res < r_cnn))
    train64, test64 = _subset(blood_path, n_train, n_test, size=64)
    r_64, _ = _robust(_train("cnn", train64, epochs), test64, "pgd", 1 / 255)
    log(f"BloodMNIST SmallCNN 64 px: robust {r_64:.3f}")
    rows.append(("Ma et al.: higher resolution is more vulnerable", "64 px below 28 px",
                 f"PGD-10 1/255: 28 px {r_cnn:.2f}, 64 px {r_64:.2f}", r_64 < r_cnn))

    # Hirano et al.: universal perturbations
    pneu_train, pneu_test = _subset(PNEUMONIA, n_train, n_test)
    pneu = _train("cnn", pneu_train, epochs)
    for label, model, test in (("BloodMNIST", cnn, test28), ("PneumoniaMNIST", pneu, pneu_test)):
        rates = {}
        for e in (4, 8, 15):
            _, c = _robust(model, test, {"name": "universal", "epochs": 5}, e / 255)
            rates[e] = c["fooled"] / c["n"]
        _, c = _robust(model, test, {"name": "universal", "epochs": 5, "targeted": True, "target": 0}, 15 / 255)
        hit = c["target_hits"] / c["n"]
        log(f"{label} UAP fooling rates {rates}, targeted hits at 15/255 {hit:.3f}")
        rows.append((f"Hirano et al.: UAPs fool most inputs ({label})", "non-targeted > 80%",
                     ", ".join(f"{e}/255 {r:.2f}" for e, r in rates.items()), max(rates.values()) > 0.8))
        rows.append((f"Hirano et al.: targeted UAP ({label})", "most inputs to the target",
                     f"15/255 hits {hit:.2f}", hit > 0.5))

    # Paul et al.: FGSM drop and ensemble recovery
    r_std, counts = _robust(pneu, pneu_test, "fgsm", 8 / 255)
    clean_std = counts["clean_correct"] / counts["n"]
    hardened = []
    for seed in range(3):
        member = copy.deepcopy(pneu)
        torch.manual_seed(seed)
        train_classifier(member, pneu_train, build_hardening("pgd-at", eps=8 / 255, steps=3),
                         epochs=max(1, epochs // 2), batch_size=64, lr=1e-3)
        hardened.append(member.eval())
    r_at, _ = _robust(hardened[0], pneu_test, "fgsm", 8 / 255)
    r_ens, c_ens = _robust(LogitEnsemble(hardened).eval(), pneu_test, "fgsm", 8 / 255)
    log(f"PneumoniaMNIST FGSM 8/255: standard {clean_std:.3f} -> {r_std:.3f}, PGD-AT {r_at:.3f}, "
        f"ensemble of {len(hardened)} {r_ens:.3f} (clean {c_ens['clean_correct'] / c_ens['n']:.3f})")
    rows.append(("Paul et al.: FGSM collapses a standard model", "large drop at 8/255",
                 f"{clean_std:.2f} -> {r_std:.2f}", clean_std - r_std > 0.3))
    rows.append(("Paul et al.: adversarial training and ensembles recover", "ensemble >= one hardened model",
                 f"PGD-AT {r_at:.2f}, ensemble of {len(hardened)} {r_ens:.2f}",
                 r_at > r_std and r_ens >= r_at - 1 / len(pneu_test)))

    # detectors
    cal = _subset(blood_path, n_train + n_test, 0)[0].subset(torch.arange(n_train, n_train + n_test))
    maha = MahalanobisDetector(cnn).fit(train28)
    half = len(cal) // 2
    adv = [build_attack("pgd", eps=e, steps=10, early_stop=False).attack(cnn, cal.images[s], cal.labels[s]).x_adv
           for e, s in ((2 / 255, slice(0, half)), (8 / 255, slice(half, None)))]
    kdbu = KDBUDetector(cnn).fit(train28).fit_combiner(cal.images, adv)
    for name, det in (("Mahalanobis", maha), ("KD+BU", kdbu)):
        aucs = {round(e * 255): rank_auc(c, a) for e, (c, a) in
                detection_scores(det, cnn, (test28.images, test28.labels), [2 / 255, 8 / 255]).items()}
        log(f"BloodMNIST {name} ROC AUC {aucs}")
        rows.append((f"{name} detects adversarial inputs (BloodMNIST)", "AUC well above 0.5, higher at 8/255",
                     f"2/255 {aucs[2]:.2f}, 8/255 {aucs[8]:.2f}", aucs[8] > 0.5 and aucs[8] >= aucs[2]))

    width = max(len(r[0]) for r in rows)
    lines = [f"| {'finding':<{width}} | paper | ours | holds |", f"|{'-' * (width + 2)}|---|---|---|"]
    lines += [f"| {f:<{width}} | {p} | {o} | {'yes' if h else 'no'} |" for f, p, o, h in rows]
    print("\n".join(lines))
    print(f"{sum(r[3] for r in rows)}/{len(rows)} directions hold; {time.perf_counter() - start:.0f} s")
    if args.output:
        args.output.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
