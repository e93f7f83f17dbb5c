"""The hardening table: clean and PGD robust accuracy of several models or defended systems.

Results are counts over the site's data (``num-examples``, ``correct`` per system
and epsilon), so sites can report them and the server can sum them before
dividing. A system is any ``nn.Module`` classifier, so attacking a detector-gated
router or an ensemble *through* the whole module is the adaptive (white-box)
attack; ``source`` instead crafts the inputs on another model and transfers them
(the attacker who does not know the defence).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..attacks import build_attack
from ..attacks.base import attack_mode, check_batch
from ..data import ImageSet
from ..results.eps import eps_name

PREFIX = "hardening"
_SYSTEM = re.compile(r"^[a-z0-9][a-z0-9_\-+]*$")
_NAME = re.compile(rf"^{PREFIX}\.(?P<system>[a-z0-9_\-+]+)\.(?:eps=(?P<eps>[0-9.e+\-]+)\.robust|clean)-correct$")


def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with attack_mode(model), torch.inference_mode():
        return model(x).clone()


def evaluate_hardening(
    systems: Mapping[str, nn.Module],
    data: ImageSet | tuple[torch.Tensor, torch.Tensor],
    epsilons: Sequence[float],
    *,
    steps: int = 10,
    source: nn.Module | None = None,
    batch_size: int = 128,
    seed: int = 0,
) -> dict[str, int]:
    """Counts ``hardening.<system>.clean-correct`` and ``hardening.<system>.eps=<e>.robust-correct``.

    Robust means correct on the clean input *and* on its Linf PGD-``steps`` adversarial
    input (so robust <= clean), crafted on the system itself or, with ``source``, on
    that model. ``num-examples`` is the number of samples every count is over.
    """
    x_all, y_all = (data.images, data.labels) if isinstance(data, ImageSet) else data
    bad = [s for s in systems if not _SYSTEM.match(s)]
    if bad:
        raise ValueError(f"systems: name {bad[0]!r} must be lower-case letters, digits, _ - +")
    if not epsilons:
        raise ValueError("epsilons: need at least one value")
    attacks = {float(e): build_attack("pgd", eps=float(e), steps=steps, seed=seed) for e in epsilons}
    full = {e: build_attack("pgd", eps=e, steps=steps, seed=seed, early_stop=False) for e in attacks}
    out: dict[str, int] = {"num-examples": int(len(y_all))}
    for start in range(0, len(y_all), batch_size):
        x, y = check_batch(x_all[start:start + batch_size], y_all[start:start + batch_size])
        # transferred inputs run all steps: stopping at the source's boundary would weaken them
        transferred = ({e: a.attack(source, x, y).x_adv for e, a in full.items()}
                       if source is not None else {})
        for name, system in systems.items():
            clean = _predict(system, x)
            ok = clean.argmax(1) == y
            _add(out, f"{PREFIX}.{name}.clean-correct", int(ok.sum()))
            for e, atk in attacks.items():
                if source is None:
                    robust = atk.attack(system, x, y, clean_logits=clean).robust_correct
                else:
                    robust = int((ok & (_predict(system, transferred[e]).argmax(1) == y)).sum())
                _add(out, f"{PREFIX}.{name}.eps={eps_name(e)}.robust-correct", robust)
    return out


def _add(out: dict[str, int], key: str, value: int) -> None:
    out[key] = out.get(key, 0) + value


def hardening_accuracies(metrics: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """Counts (one site's or summed over sites) -> ``{system: {"clean": acc, "eps=<e>": acc}}``."""
    n = float(metrics.get("num-examples", 0))
    table: dict[str, dict[str, float]] = {}
    for name, value in metrics.items():
        m = _NAME.match(name)
        if m and n:
            key = "clean" if m["eps"] is None else f"eps={m['eps']}"
            table.setdefault(m["system"], {})[key] = float(value) / n
    return table
