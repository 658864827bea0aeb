"""Conditional parameters (``when:``): which params a point holds, in which order they are sampled.

A param with ``when: {optimizer: [sgd]}`` is sampled, stored and passed to the
trainer only when every listed param takes one of the listed values; elsewhere
it is absent. Params are sampled in dependency order (:attr:`Conditions.order`:
each after the params its condition names), define-by-run through
``trial.suggest_*``, so a sampler (TPE, random, the grid) sees a param only in
the trials that hold it. The schema has already refused unknown params, values
outside their choices, numeric conditions and cycles.

Optuna is imported on first use, so ``import hpsearch.search`` stays light.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpsearch.search._dedupe import FiniteSpace
from hpsearch.search._space import ABSENT, MAX_GRID_POINTS

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

    from hpsearch.config import StudyConfig

__all__ = ["ABSENT", "ConditionalSpace", "Conditions"]

#: A point of a finite conditional space: a value index per param, in order; -1 where absent.
Key = tuple[int, ...]


def _same(a: Any, b: Any) -> bool:
    return bool(a == b) and isinstance(a, bool) == isinstance(b, bool)


@dataclass(frozen=True)
class Conditions:
    """The ``when:`` of a search space: ``whens`` (conditional params only) and every param's ``order``."""

    whens: dict[str, dict[str, list[Any]]]
    order: list[str]

    @classmethod
    def of(cls, cfg: StudyConfig) -> Conditions | None:
        """The conditions of ``cfg``'s search space; None when no param has ``when:`` (today's path)."""
        whens = {n: dict(s.when) for n, s in cfg.search_space.items() if s.when}
        if not whens:
            return None
        order: list[str] = []

        def visit(name: str) -> None:  # the schema refused cycles
            if name not in order:
                for dep in whens.get(name, {}):
                    visit(dep)
                order.append(name)

        for name in cfg.search_space:
            visit(name)
        return cls(whens, order)

    def holds(self, name: str, params: Mapping[str, Any]) -> bool:
        """Whether ``name`` is sampled given the (earlier) ``params``; a condition on an absent param fails."""
        return all(
            key in params and params[key] != ABSENT and any(_same(params[key], v) for v in values)
            for key, values in self.whens.get(name, {}).items()
        )

    def present(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` without those whose condition fails (a full draw -> the point it names)."""
        out: dict[str, Any] = {}
        for name in self.order:
            if name in params and self.holds(name, out):
                out[name] = params[name]
        return out

    def valid(self, point: Mapping[str, Any]) -> bool:
        """Whether a grid point (:data:`ABSENT` where a param is left out) is one the conditions allow."""
        return all((point[n] != ABSENT) == self.holds(n, point) for n in self.order if n in point)

    def suggest(self, trial: optuna.trial.Trial, distributions: Mapping[str, BaseDistribution]) -> None:
        """Suggest each param whose condition holds, in dependency order (fixed params of a queued trial kept)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution

        values: dict[str, Any] = {}
        for name in self.order:
            if not self.holds(name, values):
                continue
            d: Any = distributions[name]
            if isinstance(d, CategoricalDistribution):
                values[name] = trial.suggest_categorical(name, d.choices)
            elif isinstance(d, FloatDistribution):
                values[name] = trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)
            else:
                values[name] = trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)


class ConditionalSpace:
    """A finite conditional space for ``sampler.dedupe``: its valid points (params present), numbered.

    Build it with :meth:`of`, which returns None for a space with a continuous param
    (or too many points to list). Same interface as :class:`FiniteSpace` for the scheduler.
    """

    def __init__(self, conditions: Conditions, distributions: Mapping[str, BaseDistribution]) -> None:
        self.conditions = conditions
        self.distributions = dict(distributions)
        singles = {n: FiniteSpace.of({n: d}) for n, d in self.distributions.items()}
        self._singles = {n: s for n, s in singles.items() if s is not None}
        self.points: list[Key] = list(self._walk(0, {}, ()))
        self.size = len(self.points)

    @classmethod
    def of(cls, conditions: Conditions, distributions: Mapping[str, BaseDistribution]) -> ConditionalSpace | None:
        full = FiniteSpace.of(distributions)
        if full is None:
            return None
        bound = 1
        for n in full.sizes:
            bound *= n + 1
        return None if bound > MAX_GRID_POINTS else cls(conditions, distributions)

    def _walk(self, i: int, values: dict[str, Any], key: Key) -> Iterator[Key]:
        """Every valid point, params taken in dependency order."""
        if i == len(self.conditions.order):
            yield key
            return
        name = self.conditions.order[i]
        if not self.conditions.holds(name, values):
            yield from self._walk(i + 1, values, (*key, -1))
            return
        single = self._singles[name]
        for j in range(single.size):
            yield from self._walk(i + 1, {**values, name: single.params((j,))[name]}, (*key, j))

    def key(self, params: Mapping[str, Any]) -> Key | None:
        """The point ``params`` name (absent params -1); None when a value is off the space."""
        out = []
        for name in self.conditions.order:
            k = self._singles[name].key({name: params[name]}) if name in params else (-1,)
            if k is None:
                return None
            out.append(k[0])
        return tuple(out)

    def params(self, key: Key) -> dict[str, Any]:
        """The params present at point ``key``."""
        return {n: self._singles[n].params((i,))[n] for n, i in zip(self.conditions.order, key, strict=True) if i >= 0}

    def unseen(self, seen: Collection[Key], rng: random.Random) -> dict[str, Any] | None:
        """A valid point not in ``seen``, uniformly at random; None when every point is seen."""
        taken = set(seen)
        free = [k for k in self.points if k not in taken]
        return self.params(rng.choice(free)) if free else None
