"""Differential privacy for the values a site releases, with OpenDP's mechanisms and accounting.

Which values are noised, and how far one patient moves each, is declared once in
:mod:`fedaegis.shared.reply.schema`: counts (sensitivity 1, or more where one patient
gives several inputs or files) and sums with a per-sample bound. Sizes of the site's
fixed sets and bookkeeping pass as they are; sums without a known bound are withheld.

A release of ``m`` noised values at privacy cost ``epsilon`` gives each ``epsilon / m``
(basic composition): Laplace noise is OpenDP's discrete Laplace on integer counts (its
float Laplace on sums), Gaussian noise is OpenDP's discrete Gaussian, calibrated in zCDP
and converted to (epsilon, delta) by OpenDP. No noise is sampled here by hand: OpenDP
samples from exact distributions, so no released value reveals the count it hides.
The site's persistent budget is :class:`fedaegis.shared.site.ledger.PrivacyLedger`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from ..results.privacy import EPSILON_KEY, STD_KEY, WITHHELD, ratio_interval  # noqa: F401 - the declared keys

MECHANISMS = ("none", "laplace", "gaussian")


def _dp():
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp


@lru_cache(maxsize=64)
def _gaussian_rho(epsilon: float, delta: float) -> float:
    """The zCDP rho whose (epsilon, delta) conversion (OpenDP's) meets the target."""
    dp = _dp()
    profile = _unit_gaussian_profile()

    def eps_of(d_in: float) -> float:  # rho = d_in^2 / 2 at scale 1
        return dp.c.make_fix_delta(profile, delta).map(d_in)[0]

    d = dp.binary_search(lambda d_in: eps_of(d_in) <= epsilon, bounds=(1e-6, 30.0), T=float)
    return d * d / 2


def _unit_gaussian_profile():
    """OpenDP's (epsilon, delta) profile of a Gaussian of scale 1 (zCDP converted)."""
    dp = _dp()
    space = dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float)
    return dp.c.make_zCDP_to_approxDP(dp.m.make_gaussian(*space, scale=1.0))


@dataclass(frozen=True)
class CountMechanism:
    """Noise for one release of ``m`` values at privacy cost ``epsilon`` (and ``delta``)."""

    kind: str
    epsilon: float
    delta: float = 1e-6

    def __post_init__(self) -> None:
        if self.kind not in MECHANISMS:
            raise ValueError(f"metric-dp: must be one of {MECHANISMS}, got {self.kind!r}")
        if self.kind != "none" and not self.epsilon > 0:
            raise ValueError(f"metric-epsilon: must be > 0, got {self.epsilon}")
        if self.kind == "gaussian" and not 0 < self.delta < 1:
            raise ValueError(f"metric-delta: must be in (0, 1), got {self.delta}")

    def scale(self, sensitivity: float, m: int) -> float:
        """Noise scale of one of ``m`` values whose sensitivity is ``sensitivity``."""
        if self.kind == "laplace":
            return sensitivity * m / self.epsilon
        return sensitivity / math.sqrt(2 * _gaussian_rho(self.epsilon, self.delta) / m)

    def noise_std(self, m: int, sensitivity: float = 1.0) -> float:
        """Standard deviation of the noise on each of ``m`` jointly released values."""
        if self.kind == "none" or m == 0:
            return 0.0
        s = self.scale(sensitivity, m)
        return math.sqrt(2.0) * s if self.kind == "laplace" else s

    def measurement(self, sensitivity: float, m: int, integer: bool):
        """OpenDP's measurement for one value; its ``map(sensitivity)`` is that value's privacy loss."""
        dp = _dp()
        T = int if integer else float
        domain = dp.atom_domain(T=T) if integer else dp.atom_domain(T=float, nan=False)
        space = domain, dp.absolute_distance(T=T)
        if self.kind == "laplace":
            return dp.m.make_laplace(*space, scale=self.scale(sensitivity, m))
        return dp.m.make_gaussian(*space, scale=self.scale(sensitivity, m))

    def loss(self, sensitivities: list[tuple[float, bool]]) -> tuple[float, float]:
        """(epsilon, delta) of releasing values of these sensitivities, by OpenDP's own maps."""
        m = len(sensitivities)
        if self.kind == "none" or m == 0:
            return 0.0, 0.0
        if self.kind == "laplace":
            total = 0.0
            for s, integer in sensitivities:
                d_in = int(math.ceil(s)) if integer else float(s)
                total += float(self.measurement(s, m, integer).map(d_in))
            return total, 0.0
        rho = sum(float(self.measurement(s, m, integer).map(int(math.ceil(s)) if integer else float(s)))
                  for s, integer in sensitivities)
        fixed = _dp().c.make_fix_delta(_unit_gaussian_profile(), self.delta)
        return float(fixed.map(math.sqrt(2 * rho))[0]), self.delta


def noised_keys(metrics: Mapping[str, int | float], cfg, is_train: bool, keep: tuple[str, ...] = ()
                ) -> dict[str, tuple[float, bool]]:
    """The keys a DP release noises, each with (sensitivity, is an integer count)."""
    from .schema import declaration

    out = {}
    for name in metrics:
        key = declaration(name, cfg, is_train)
        if name in keep or key is None:
            continue
        if key.kind == "count":
            out[name] = (float(key.sensitivity), True)
        elif key.kind == "sum" and key.bound is not None:
            out[name] = (float(key.bound), False)
    return out


def privatize(
    metrics: Mapping[str, int | float], mechanism: CountMechanism, *, cfg, is_train: bool, keep: tuple[str, ...] = ()
) -> tuple[dict[str, int | float], tuple[float, float]]:
    """Noise the declared counts and bounded sums, withhold other sums; return the release and its cost.

    Sizes and bookkeeping pass unchanged; ``keep`` values pass unchanged and uncharged (a
    training reply's FedAvg weight, which the federation needs and the site knowingly
    shares). Noisy counts are clamped to ``[0, group size]`` (post-processing).
    """
    from .schema import declaration, group_size

    if mechanism.kind == "none":
        return dict(metrics), (0.0, 0.0)
    noise = noised_keys(metrics, cfg, is_train, keep)
    m = len(noise)
    out: dict[str, int | float] = {}
    for name, value in metrics.items():
        key = declaration(name, cfg, is_train)
        if name in noise:
            s, integer = noise[name]
            meas = mechanism.measurement(s, m, integer)
            noisy = meas(int(value)) if integer else meas(float(value))
            if integer:
                noisy = min(max(int(noisy), 0), int(group_size(name, metrics, cfg, is_train)))
            out[name] = noisy
        elif name in keep or (key is not None and key.kind in ("size", "meta")):
            out[name] = value
        else:
            out[name] = 0 if isinstance(value, int) else 0.0  # no known sensitivity: withheld
    out[STD_KEY] = mechanism.noise_std(m) if m else 0.0
    return out, mechanism.loss(list(noise.values()))


def withhold(metrics: Mapping[str, int | float], cfg, is_train: bool, keep: tuple[str, ...] = ()) -> dict[str, int | float]:
    """Everything but sizes, bookkeeping and ``keep`` zeroed, marked ``dp-withheld-count = 1``."""
    from .schema import declaration

    out: dict[str, int | float] = {}
    for name, value in metrics.items():
        key = declaration(name, cfg, is_train)
        passes = name in keep or (key is not None and key.kind in ("size", "meta"))
        out[name] = value if passes else (0 if isinstance(value, int) else 0.0)
    out[WITHHELD] = 1
    return out


def interval(total: float, sites: int, std: float, z: float = 1.96) -> tuple[float, float]:
    """Noise-only confidence interval of a count summed over ``sites`` noisy releases."""
    half = z * std * math.sqrt(max(sites, 0))
    return total - half, total + half

