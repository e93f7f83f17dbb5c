"""A site's part of a defence comparison (``defence-models``): train every member, evaluate the defences.

Training: each member of the global :class:`~fedaegis.shared.models.members.MemberSet` is
trained on the site's data, plainly (``none``) or with its hardening method, with
the same class weighting (``class-weighting = balanced``: inverse local class
frequency) in every loss.

Evaluation, on at most ``attack-samples`` test images (the *evaluation* images):

* every member: clean accuracy and PGD-10 robust accuracy per epsilon, attacked on itself;
* with ``detector``: the detector is fitted on the standard member's penultimate
  features of the site's own training images and thresholded on the site's other test
  images (the *calibration* images, never evaluated on) so that at most ``detector-fpr``
  of new clean images are routed (a split-conformal cut, :func:`fedaegis.shared.detection.threshold_at_fpr`); the
  site reports binned histograms of its scores on clean and on PGD-10 adversarial
  evaluation images (crafted on the standard member; Lee et al.'s protocol: clean
  inputs classified correctly, adversarial ones that fool the model), so the server
  computes a federated ROC AUC; and the detector-gated router (standard member,
  ``router-hardened`` member) against attacks transferred from the standard member
  and against the adaptive PGD through detector, gate and both models;
* with two or more members: the logit ensemble of all members under the adaptive PGD.

Everything leaves the site as counts (:mod:`fedaegis.shared.results.defence_report`,
:mod:`fedaegis.shared.detection.roc`); scores, thresholds and images stay.
"""

from __future__ import annotations

from collections.abc import Mapping

import math

import torch
from torch import nn

from ..shared.run.config import RunConfig
from ..shared.data import ImageSet
from ..shared.data.types import batch_for
from ..shared.models.members import MemberSet
from ..shared.results.base import eps_name

PGD_STEPS = 10
MAX_DETECTOR_FIT = 5000  # training images whose features fit the detector (bounds time and memory)
MAX_COMBINER_FIT = 256  # calibration images crafted to fit KD+BU's logistic combiner




def _seeded_perm(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def evaluation_split(test: ImageSet, max_samples: int, seed: int) -> tuple[ImageSet, ImageSet]:
    """(evaluation, calibration) images of the test split, disjoint and seeded.

    At most ``max_samples`` (0: no limit) and at most half of the split are evaluated;
    the rest calibrates the detector's threshold, so it is set on clean data held
    out from both the model's training and the evaluation. At a site, ``max_samples`` is
    one of its policy's fixed sizes and ``seed`` its own secret one (see ``evaluate_defences``).
    """
    n = len(test)
    n_eval = math.ceil(n / 2) if max_samples == 0 else min(max_samples, math.ceil(n / 2))
    order = _seeded_perm(n, seed)
    return test.subset(order[:n_eval].sort().values), test.subset(order[n_eval:].sort().values)


def _fit_detector(cfg: RunConfig, standard: nn.Module, train: ImageSet, calibration: ImageSet, seed: int) -> nn.Module:
    from ..shared.detection import KDBUDetector, MahalanobisDetector

    if len(train) > MAX_DETECTOR_FIT:
        train = train.subset(_seeded_perm(len(train), seed)[:MAX_DETECTOR_FIT].sort().values)
    if cfg.detector == "mahalanobis":
        return MahalanobisDetector(standard).fit(train)
    from ..shared.attacks import build_attack

    # one share of the calibration images per evaluated budget: each score's orientation must hold at all
    # at most MAX_COMBINER_FIT images, made whole: the combiner scores them and their examples together
    cal = calibration.subset(torch.arange(min(len(calibration), MAX_COMBINER_FIT))).eager()
    shares = torch.arange(len(cal)).tensor_split(len(cfg.epsilon_values))
    x_adv = [build_attack("pgd", eps=e, steps=PGD_STEPS, seed=seed, early_stop=False).attack(
        standard, cal.images[s], cal.labels[s]).x_adv for e, s in zip(cfg.epsilon_values, shares) if len(s)]
    return KDBUDetector(standard, seed=seed).fit(train).fit_combiner(cal.images, x_adv)


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    from ..shared.attacks.base import attack_mode

    with attack_mode(model):
        return model(x).argmax(1)


def _transfer_and_detection(cfg: RunConfig, standard: nn.Module, hardened_name: str, hardened: nn.Module,
                            router: nn.Module, detector: nn.Module, data: ImageSet, seed: int,
                            batch_size: int | None = None) -> dict[str, int]:
    """PGD-10 crafted once per eps on the standard member: detector histograms and the transfer table."""
    batch_size = batch_size or batch_for(data.images.shape[1:], 128)
    from ..shared.attacks import build_attack
    from ..shared.attacks.base import attack_mode
    from ..shared.detection import DEFAULT_BINS, encode_histograms

    bins = DEFAULT_BINS[cfg.detector]
    systems = {"none": standard, hardened_name: hardened, "routed": router}
    eps_list = cfg.epsilon_values
    n = len(data)
    counts: dict[str, int] = {}
    hist = {e: [torch.zeros(bins.bins, dtype=torch.long), torch.zeros(bins.bins, dtype=torch.long)] for e in eps_list}

    def add(key: str, value: int) -> None:
        counts[key] = counts.get(key, 0) + int(value)

    attacks = {e: build_attack("pgd", eps=e, steps=PGD_STEPS, seed=seed, early_stop=False) for e in eps_list}
    for x, y in zip(data.images.split(batch_size), data.labels.split(batch_size)):
        clean_ok = {name: _predict(s, x) == y for name, s in systems.items()}
        with attack_mode(detector), torch.no_grad():
            clean_scores = detector(x).float()
            routed_clean = router.route(x)  # type: ignore[operator]
        add("routed.routed-count", routed_clean.sum())
        for e, atk in attacks.items():
            x_adv = atk.attack(standard, x, y).x_adv
            with attack_mode(detector), torch.no_grad():
                adv_scores = detector(x_adv).float()
                routed_adv = router.route(x_adv)  # type: ignore[operator]
            add(f"routed.eps={eps_name(e)}.routed-count", routed_adv.sum())
            for name, s in systems.items():
                add(f"{name}.eps={eps_name(e)}.robust-correct", (clean_ok[name] & (_predict(s, x_adv) == y)).sum())
            fooled = clean_ok["none"] & (_predict(standard, x_adv) != y)
            hist[e][0] += bins.histogram(clean_scores[clean_ok["none"]])
            hist[e][1] += bins.histogram(adv_scores[fooled])
        for name in systems:
            add(f"{name}.clean-correct", clean_ok[name].sum())
    from ..shared.results.defence_report import encode_table

    table = {"num-examples": n, **{f"hardening.{k}": v for k, v in counts.items() if not k.endswith("routed-count")}}
    out: dict[str, int] = encode_table("transfer", table, systems, eps_list)
    out.update({f"defence.transfer.{k}": v for k, v in counts.items() if k.endswith("routed-count")})
    for e, (clean, adv) in hist.items():
        out.update(encode_histograms(cfg.detector, e, clean, adv))
    return out


def evaluate_defences(model: nn.Module, cfg: RunConfig, train: ImageSet, test: ImageSet, seed: int,
                      node_config: Mapping[str, object] | None = None) -> dict[str, int]:
    """The site's defence-comparison counts (see the module docstring); {} without ``defence-models``.

    With ``node_config`` (at a site) the evaluation set is the site's: a size from its
    policy, drawn from its secret, so the server's seed and sample count select nothing.
    """
    if not isinstance(model, MemberSet):
        return {}
    from ..shared.results.defence_report import encode_table
    from ..shared.models.defence_systems import DetectorGatedRouter, LogitEnsemble
    from ..shared.hardening import evaluate_hardening

    torch.manual_seed(seed)
    model.eval()
    members = dict(model.members.items())
    if node_config is None:
        evaluation, calibration = evaluation_split(test, cfg.attack_samples, seed)
    else:
        from ..shared.site.policy import eval_size, site_policy
        from .site import site_seed

        half = math.ceil(len(test) / 2)
        size = eval_size(site_policy(node_config), cfg.attack_samples, half)
        evaluation, calibration = evaluation_split(test, size, site_seed(cfg, node_config, "defences", len(test), size))
    eps = cfg.epsilon_values
    out = encode_table("hardening", evaluate_hardening(members, evaluation, eps, steps=PGD_STEPS, seed=seed),
                       members, eps)
    adaptive: dict[str, nn.Module] = {}
    if cfg.detector and len(calibration) > 0:
        standard, hardened = members["none"], members[cfg.router_hardened]
        detector = _fit_detector(cfg, standard, train, calibration, seed)
        router = DetectorGatedRouter.calibrated(detector, standard, hardened, calibration.images, fpr=cfg.detector_fpr)
        out.update(_transfer_and_detection(cfg, standard, cfg.router_hardened, hardened, router, detector,
                                           evaluation, seed))
        adaptive["routed"] = router
    if len(members) >= 2:
        adaptive["ensemble"] = LogitEnsemble(list(members.values()))
    if adaptive:
        out.update(encode_table("adaptive", evaluate_hardening(adaptive, evaluation, eps, steps=PGD_STEPS, seed=seed),
                                adaptive, eps))
    return out
