"""A visual report for the hospital's own staff, written in the site's folder and never sent.

The federation's figures are counts; radiologists and the site's IT want to *see* what an
attack does to their images and to their model's attention before trusting either. When the
site's policy says so (``[site] visual-report = true``), the site writes, after the run's
final evaluation round, one self-contained HTML page under its state folder
(``<state-dir>/reports/run-<flower run id>/index.html``, owner-only):

* a handful of its test images, clean against adversarial (PGD at the run's largest
  epsilon), with the perturbation amplified to the full grey range;
* Grad-CAM maps (MONAI's :class:`monai.visualize.GradCAM`, on the model's last convolution)
  of the clean and the adversarial image, as in the survey's Figure 2;
* the confusion matrix on the evaluation set, clean and under attack;
* the adversarial-input detector's score histogram, clean against adversarial (the run's
  ``detector``, else a Mahalanobis detector fitted on the site's training images).

Nothing here is part of any reply: the page is built after the reply's figures and from the
same model and data only (tests/test_visual_report.py compares replies with it on and off).
"""

from __future__ import annotations

import base64
import html
import io
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..shared.attacks import attack_mode, build_attack
from ..shared.run.config import RunConfig
from ..shared.data import ImageSet
from ..shared.run.paths import write_private

log = logging.getLogger("fedaegis.site")

NUM_EXAMPLES = 6  # images shown clean against adversarial
MAX_IMAGES = 128  # evaluation images behind the confusion matrices and histograms (bounds time)


def report_dir(state_dir: Path, flwr_run_id: int | str) -> Path:
    return state_dir / "reports" / f"run-{flwr_run_id}"


def last_conv(model: nn.Module) -> str:
    """Dotted name of the model's last 2D/3D convolution (Grad-CAM's target layer)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Conv3d)]
    if not names:
        raise ValueError("the model has no convolution for Grad-CAM")
    return names[-1]


def _predict(model: nn.Module, x: torch.Tensor, batch: int = 128) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])


def _confusion(y: torch.Tensor, pred: torch.Tensor, k: int) -> np.ndarray:
    m = np.zeros((k, k), dtype=int)
    np.add.at(m, (y.numpy(), pred.numpy()), 1)
    return m


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _show(ax, img: torch.Tensor) -> None:
    """One 2D image (channels first) or the middle slice of a volume, in [0, 1]."""
    a = img.detach().float()
    if a.dim() == 4:  # C, D, H, W: middle axial slice
        a = a[:, a.shape[1] // 2]
    a = a.permute(1, 2, 0).numpy()
    ax.imshow(a[..., 0] if a.shape[-1] == 1 else a.clip(0, 1), cmap="gray" if a.shape[-1] == 1 else None,
              vmin=0, vmax=1)
    ax.axis("off")


def _overlay(ax, img: torch.Tensor, cam: torch.Tensor) -> None:
    _show(ax, img)
    c = cam.detach().float()
    if c.dim() == 4:
        c = c[:, c.shape[1] // 2]
    ax.imshow(c[0].numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1)


def _examples(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
              pred: torch.Tensor, pred_adv: torch.Tensor) -> str:
    import matplotlib.pyplot as plt
    from monai.visualize import GradCAM

    k = min(NUM_EXAMPLES, len(x))
    # flipped images first: they show what the attack does
    order = torch.argsort((pred == pred_adv).int(), stable=True)[:k]
    cam = GradCAM(nn_module=model, target_layers=last_conv(model))
    with torch.enable_grad():
        cam_clean = cam(x[order].clone(), class_idx=None)
        cam_adv = cam(x_adv[order].clone(), class_idx=None)
    fig, axes = plt.subplots(k, 5, figsize=(10, 2.1 * k), squeeze=False)
    for row, i in enumerate(order.tolist()):
        delta = x_adv[i] - x[i]
        amp = 0.5 + delta / (2 * delta.abs().max().clamp_min(1e-12))  # grey: untouched
        panels = [("clean", lambda ax: _show(ax, x[i])), ("adversarial", lambda ax: _show(ax, x_adv[i])),
                  ("perturbation (amplified)", lambda ax: _show(ax, amp)),
                  ("Grad-CAM clean", lambda ax: _overlay(ax, x[i], cam_clean[row])),
                  ("Grad-CAM adversarial", lambda ax: _overlay(ax, x_adv[i], cam_adv[row]))]
        for col, (title, draw) in enumerate(panels):
            draw(axes[row][col])
            axes[row][col].set_title(title if row == 0 else "", fontsize=8)
        axes[row][0].set_ylabel(f"label {int(y[i])}")
        axes[row][0].text(0, -0.08, f"label {int(y[i])}: {int(pred[i])} -> {int(pred_adv[i])}",
                          transform=axes[row][0].transAxes, fontsize=7, va="top")
    return _png(fig)


def _confusions(y: torch.Tensor, pred: torch.Tensor, pred_adv: torch.Tensor, k: int) -> str:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(4 + 0.4 * k * 2, 2 + 0.4 * k))
    for ax, title, p in ((axes[0], "clean", pred), (axes[1], "under attack", pred_adv)):
        m = _confusion(y, p, k)
        ax.imshow(m, cmap="Blues")
        for (r, c), v in np.ndenumerate(m):
            ax.text(c, r, str(v), ha="center", va="center", fontsize=8)
        ax.set_title(f"{title}: accuracy {np.trace(m) / max(m.sum(), 1):.3f}", fontsize=9)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
    return _png(fig)


def _detector_histogram(model: nn.Module, cfg: RunConfig, train: ImageSet, x: torch.Tensor,
                        x_adv: torch.Tensor) -> tuple[str, str]:
    import matplotlib.pyplot as plt

    from ..shared.detection import DETECTORS, KDBUDetector

    name = cfg.detector or "mahalanobis"
    n_fit = min(len(train), 1000)
    detector = DETECTORS[name](model).fit(train.subset(torch.arange(n_fit)))
    if isinstance(detector, KDBUDetector):  # its combiner learns from clean against adversarial
        detector.fit_combiner(x, x_adv)
    with attack_mode(detector), torch.no_grad():
        clean, adv = detector(x).float().numpy(), detector(x_adv).float().numpy()
    fig, ax = plt.subplots(figsize=(5, 2.8))
    bins = np.histogram_bin_edges(np.concatenate([clean, adv]), bins=30)
    ax.hist(clean, bins=bins, alpha=0.6, label="clean")
    ax.hist(adv, bins=bins, alpha=0.6, label="adversarial")
    ax.set_xlabel(f"{name} score (higher: more likely adversarial)")
    ax.legend(fontsize=8)
    return name, _png(fig)


def write_site_report(model: nn.Module, cfg: RunConfig, train: ImageSet, test: ImageSet, out_dir: Path,
                      seed: int) -> Path:
    """Write the page (see the module docstring) into ``out_dir``; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(test), generator=gen)[:MAX_IMAGES].sort().values
    x, y = test.images[idx].float(), test.labels[idx].long()
    eps = max(cfg.epsilon_values)
    model.eval()
    torch.manual_seed(seed)
    with attack_mode(model):
        x_adv = build_attack("pgd", eps=eps).details(model, x, y).x_adv.detach()
    pred, pred_adv = _predict(model, x), _predict(model, x_adv)
    sections = [
        ("Clean against adversarial, with Grad-CAM", _examples(model, x, x_adv, y, pred, pred_adv),
         f"PGD at epsilon {eps:.4g} (L-inf, images in [0, 1]); the perturbation is stretched to the full "
         "grey range to be visible. Grad-CAM on the model's last convolution, for its predicted class."),
        ("Confusion matrices", _confusions(y, pred, pred_adv, cfg.num_classes),
         f"{len(x)} test images of this site."),
    ]
    try:
        name, png = _detector_histogram(model, cfg, train, x, x_adv)
        sections.append((f"Detector scores ({name})", png, "Fitted on this site's training images."))
    except (ValueError, RuntimeError) as exc:  # e.g. too few training images per class
        log.warning("visual report: no detector histogram (%s)", exc)
    body = "".join(
        f"<h2>{html.escape(title)}</h2><p>{html.escape(note)}</p><img src='data:image/png;base64,{png}'>"
        for title, png, note in sections
    )
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>fedaegis site report</title></head>"
            f"<body style='font-family:sans-serif'><h1>fedaegis: this site's visual report</h1>"
            f"<p>Model {html.escape(cfg.model)}, dataset {html.escape(cfg.dataset)}. Written at this site "
            f"for its own staff; never sent.</p>{body}</body></html>")
    path = out_dir / "index.html"
    write_private(path, page.encode())
    return path
