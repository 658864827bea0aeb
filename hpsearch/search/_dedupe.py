"""Finite search spaces and sampler draws that write nothing: the pieces of ``sampler.dedupe``.

A space is finite when every parameter is categorical, an int range, or a float
range with a ``step``. :class:`FiniteSpace` numbers its points (each parameter's
value index, mixed radix), so a point seen before is a set lookup, and an unseen
point can be picked uniformly. :func:`draw` asks the study's sampler for a point
exactly as ``optuna.Trial`` does for ``study.ask(distributions)`` (relative
params first, the rest independently), but keeps the values in memory: a draw
that is rejected as a repeat leaves nothing in storage.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from hpsearch.search._space import MAX_GRID_POINTS

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution
    from optuna.trial import FrozenTrial

__all__ = ["FiniteSpace", "draw"]

#: A point: one value index per parameter, in the space's order.
Key = tuple[int, ...]


def _count(dist: BaseDistribution) -> int | None:
    """How many values ``dist`` takes; None when it is continuous."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if isinstance(dist, CategoricalDistribution):
        return len(dist.choices)
    step = getattr(dist, "step", None)
    if step is None:
        return None
    low, high = dist.low, dist.high  # type: ignore[attr-defined]
    if isinstance(dist, FloatDistribution):
        return round((high - low) / step) + 1
    return (int(high) - int(low)) // int(step) + 1


def _index(dist: BaseDistribution, value: Any) -> int | None:
    """The index of ``value`` among ``dist``'s values; None when it is not one of them."""
    from optuna.distributions import CategoricalDistribution

    try:
        if isinstance(dist, CategoricalDistribution):
            return int(dist.to_internal_repr(value))
        offset = (float(value) - dist.low) / dist.step  # type: ignore[attr-defined]
    except (ValueError, TypeError):
        return None
    i = round(offset)
    return i if abs(offset - i) < 1e-6 else None


def _value(dist: BaseDistribution, i: int) -> Any:
    """Value number ``i`` of ``dist`` (floats in decimal, as a grid's values)."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return dist.choices[i]
    low, step = dist.low, dist.step  # type: ignore[attr-defined]
    if isinstance(dist, IntDistribution):
        return int(low + i * step)
    return min(float(Decimal(str(low)) + i * Decimal(str(step))), dist.high)  # type: ignore[attr-defined]


class FiniteSpace:
    """A search space with finitely many points, each numbered by its value indices.

    Build it with :meth:`of`, which returns None for a space with a continuous parameter.
    """

    def __init__(self, distributions: Mapping[str, BaseDistribution], sizes: list[int]) -> None:
        self.distributions = dict(distributions)
        self.sizes = sizes
        self.size = math.prod(sizes)

    @classmethod
    def of(cls, distributions: Mapping[str, BaseDistribution]) -> FiniteSpace | None:
        """The finite space of ``distributions``, or None when one of them is continuous."""
        sizes = [_count(d) for d in distributions.values()]
        if not sizes or any(n is None for n in sizes):
            return None
        return cls(distributions, [int(n) for n in sizes if n is not None])

    def key(self, params: Mapping[str, Any]) -> Key | None:
        """The point ``params`` name; None when a parameter is missing or off the space."""
        out = []
        for (name, dist), n in zip(self.distributions.items(), self.sizes, strict=True):
            i = _index(dist, params[name]) if name in params else None
            if i is None or not 0 <= i < n:
                return None
            out.append(i)
        return tuple(out)

    def params(self, key: Key) -> dict[str, Any]:
        """The parameter values of point ``key``."""
        return {name: _value(dist, i) for (name, dist), i in zip(self.distributions.items(), key, strict=True)}

    def _flat(self, key: Key) -> int:
        flat = 0
        for i, n in zip(key, self.sizes, strict=True):
            flat = flat * n + i
        return flat

    def _unflat(self, flat: int) -> Key:
        out = []
        for n in reversed(self.sizes):
            flat, i = divmod(flat, n)
            out.append(i)
        return tuple(reversed(out))

    def unseen(self, seen: Collection[Key], rng: random.Random) -> dict[str, Any] | None:
        """A point not in ``seen``, uniformly at random; None when every point is seen."""
        taken = {self._flat(k) for k in seen}
        free = self.size - len(taken)
        if free <= 0:
            return None
        if self.size <= MAX_GRID_POINTS:
            nth = rng.randrange(free)  # the nth unseen point
            for flat in range(self.size):
                if flat not in taken:
                    if nth == 0:
                        break
                    nth -= 1
        else:  # a huge space: a random point is unseen almost surely
            flat = rng.randrange(self.size)
            while flat in taken:
                flat = rng.randrange(self.size)
        return self.params(self._unflat(flat))


def _single_value(dist: BaseDistribution) -> Any:
    from optuna.distributions import CategoricalDistribution

    return dist.choices[0] if isinstance(dist, CategoricalDistribution) else dist.low  # type: ignore[attr-defined]


def draw(study: optuna.Study, trial: FrozenTrial, distributions: Mapping[str, BaseDistribution]) -> dict[str, Any]:
    """The params the study's sampler proposes for ``trial``, without writing them.

    As ``optuna.Trial`` suggests a parameter: a single-valued one takes its value,
    one in the sampler's relative search space takes the relative sample, the rest
    are sampled independently. Each call draws afresh.
    """
    from optuna.distributions import check_distribution_compatibility

    from hpsearch.storage import _optuna as ox

    sampler = study.sampler
    # Optuna hands the sampler the study as the pruner sees it (Hyperband: the trial's bracket).
    view = ox.sampler_view(study, trial)
    space = sampler.infer_relative_search_space(view, trial)
    relative = sampler.sample_relative(view, trial, space)
    out: dict[str, Any] = {}
    for name, dist in distributions.items():
        if dist.single():
            out[name] = _single_value(dist)
        elif name in relative and name in space:
            check_distribution_compatibility(space[name], dist)
            out[name] = relative[name]
        else:
            out[name] = sampler.sample_independent(view, trial, name, dist)
    return out
