"""Transfer attacks: adversarial examples crafted on one model (the surrogate), scored on another.

An attacker rarely holds the deployed model, but often a similar one: a site's own
model before aggregation, or another member of a defence comparison. The transfer
matrix says how far each surrogate's PGD examples carry to each target, as counts a
site can report: ``transfer.<source>.<target>.eps=<e>.fooled-count`` (images the
target classifies correctly whose example crafted on the source fools it) over
``transfer.<target>.clean-correct`` and ``num-examples``. Examples run every PGD
step (no early stop): stopping at the surrogate's boundary would weaken them. In the federation
(run config ``transfer``) a site sends them in the wire form of
:mod:`fedaegis.shared.results.transfer`, each group with its own ``n-count``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from . import build_attack
from .base import attack_mode, check_batch
from ..data import ImageSet
from ..results.base import eps_name

PREFIX = "transfer"
_MODEL = re.compile(r"^[a-z0-9][a-z0-9_\-+]*$")
_FOOLED = re.compile(rf"^{PREFIX}\.(?P<src>[a-z0-9_\-+]+)\.(?P<tgt>[a-z0-9_\-+]+)\.eps=(?P<eps>[0-9.e+\-]+)"
                     r"\.fooled-count$")


def _pred(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with attack_mode(model), torch.inference_mode():
        return model(x).argmax(1)


def transfer_matrix(models: Mapping[str, nn.Module], data: ImageSet | tuple[torch.Tensor, torch.Tensor],
                    epsilons: Sequence[float], *, steps: int = 10, seed: int = 0,
                    batch_size: int = 128) -> dict[str, int]:
    """Counts of every (source, target) pair of ``models``, the diagonal being the white-box attack."""
    bad = [m for m in models if not _MODEL.match(m)]
    if bad:
        raise ValueError(f"models: name {bad[0]!r} must be lower-case letters, digits, _ - +")
    if not epsilons:
        raise ValueError("epsilons: need at least one value")
    x_all, y_all = (data.images, data.labels) if isinstance(data, ImageSet) else data
    attacks = {float(e): build_attack("pgd", eps=float(e), steps=steps, seed=seed, early_stop=False)
               for e in epsilons}
    out: dict[str, int] = {"num-examples": int(len(y_all))}
    for name in models:
        out[f"{PREFIX}.{name}.clean-correct"] = 0
        for src in models:
            for e in attacks:
                out[f"{PREFIX}.{src}.{name}.eps={eps_name(e)}.fooled-count"] = 0
    for start in range(0, len(y_all), batch_size):
        x, y = check_batch(x_all[start:start + batch_size], y_all[start:start + batch_size])
        ok = {name: _pred(m, x) == y for name, m in models.items()}
        for name in models:
            out[f"{PREFIX}.{name}.clean-correct"] += int(ok[name].sum())
        for src, surrogate in models.items():
            for e, atk in attacks.items():
                x_adv = atk.attack(surrogate, x, y).x_adv
                for tgt, target in models.items():
                    fooled = ok[tgt] & (_pred(target, x_adv) != y)
                    out[f"{PREFIX}.{src}.{tgt}.eps={eps_name(e)}.fooled-count"] += int(fooled.sum())
    return out


def transfer_rates(counts: Mapping[str, float]) -> dict[float, dict[tuple[str, str], float]]:
    """Counts (one site's or summed over sites) -> per eps, {(source, target): success rate}."""
    out: dict[float, dict[tuple[str, str], float]] = {}
    for key, value in counts.items():
        m = _FOOLED.match(key)
        if m:
            clean = counts.get(f"{PREFIX}.{m['tgt']}.clean-correct", 0)
            if clean:
                out.setdefault(float(m["eps"]), {})[(m["src"], m["tgt"])] = float(value) / clean
    return out
