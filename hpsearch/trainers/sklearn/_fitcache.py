"""A per-fit cache that lets a re-run of ``sklearn_search`` skip the fits it already did.

scikit-learn's searches cannot resume (scikit-learn#17069): a search killed halfway
starts again from its first fit. With a cache folder, :func:`cached_estimator` gives
the search its estimator as an instance of a subclass of the estimator's own class
(same name, defined in this module) whose only change is ``fit``:

* the fit's key is a hash of the study's settings (:meth:`FitCache.open`'s ``context``),
  scikit-learn's version, the estimator's params as set for this fit (estimator,
  ``estimator_params``, the candidate's params; in a halving search over another
  resource, that resource) and the rows it is fitted on (``X[train]``, ``y[train]``:
  the fold, and in a halving search over ``n_samples`` the round's subsample);
* a key already in the cache loads the fitted estimator (joblib) instead of fitting;
  otherwise the estimator is fitted and stored: written to a temporary file, then
  renamed, so a kill never leaves half an entry, and an unreadable entry is refitted.

Everything else (params, tags, ``predict``, scoring, ``cv_results_``) is the
estimator's own, so a search served from the cache returns what it would have
computed, bar the ``*_time`` columns. Failed fits (``error_score``) are not
cached: a re-run fits them again. The refit on the whole data is cached like the
others. Instances pickle through :func:`_rebuild`, so ``n_jobs`` workers (loky)
use the same cache; each fit's outcome is appended to the run's log, which
:meth:`FitCache.close` counts.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FitCache", "FitCounts", "cached_estimator", "plain_estimator"]

log = logging.getLogger("hpsearch.sklearn")

#: Bump when the key or the entry format changes: older entries are then never read.
FORMAT = 1
ENTRY = ".joblib"
#: Temporary files and run logs older than this were left by a killed run.
STALE_S = 3600.0


@dataclass(frozen=True)
class FitCounts:
    """How the fits of one search were served."""

    cached: int = 0  #: loaded from the cache
    fitted: int = 0  #: fitted and stored
    failed: int = 0  #: raised (error_score): never cached
    uncached: int = 0  #: fitted without the cache (params that cannot be hashed)


@dataclass(frozen=True)
class FitCache:
    """One search's view of a cache folder (picklable: it travels to ``n_jobs`` workers)."""

    folder: str
    #: Hash of what every key of this search shares (settings, versions).
    context: str
    #: This run's log: one line per fit, ``<event> <key>``.
    log: str
    started: float

    @classmethod
    def open(cls, folder: Path, context: Any) -> FitCache:
        """The cache in ``folder`` (created) for a search whose settings are ``context``."""
        import joblib
        import sklearn

        folder.mkdir(parents=True, exist_ok=True)
        _remove_stale(folder)
        key = joblib.hash((FORMAT, sklearn.__version__, context))
        return cls(str(folder), str(key), str(folder / f".run-{uuid.uuid4().hex}.log"), time.time())

    def key(self, estimator: Any, X: Any, y: Any, fit_params: dict[str, Any]) -> str | None:
        """The key of fitting ``estimator`` (its params as set) on ``X, y``; None if not hashable."""
        import joblib

        try:
            return str(joblib.hash((self.context, _canonical(estimator), X, y, fit_params)))
        except Exception as err:  # noqa: BLE001 - e.g. a lambda among the params: fit without the cache
            log.debug("fit not cached: cannot hash it (%s)", err)
            return None

    def path(self, key: str) -> Path:
        return Path(self.folder) / f"{key}{ENTRY}"

    def load(self, key: str, base: type[Any]) -> Any | None:
        """The fitted estimator stored under ``key``; None if absent or unreadable."""
        import joblib

        path = self.path(key)
        try:
            fitted = joblib.load(path)
        except FileNotFoundError:
            return None
        except Exception as err:  # noqa: BLE001 - a corrupt entry is refitted and overwritten
            log.warning("ignoring unreadable fit cache entry %s (%s); fitting again", path, err)
            return None
        return fitted if type(fitted) is base else None

    def store(self, key: str, fitted: Any) -> None:
        """Store ``fitted`` under ``key`` atomically; a failure only costs the entry."""
        import joblib

        tmp: str | None = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=self.folder)
            with os.fdopen(fd, "wb") as fh:
                joblib.dump(fitted, fh)
            os.replace(tmp, self.path(key))
            tmp = None
        except Exception as err:  # noqa: BLE001 - disk full, an unpicklable model: the fit stands
            log.warning("could not store a fit in the cache %s: %s", self.folder, err)
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def note(self, event: str, key: str | None) -> None:
        """Append ``event`` (hit, fit, fail, nokey) to the run's log (one short O_APPEND write)."""
        with contextlib.suppress(OSError), open(self.log, "a") as fh:
            fh.write(f"{event} {key or '-'}\n")

    def close(self, *, prune: bool) -> FitCounts:
        """Count the run's fits and delete its log; with ``prune``, delete the entries this
        run neither read nor wrote (other settings' fits), so the cache holds one search."""
        try:
            events = [line.split() for line in Path(self.log).read_text().splitlines() if line.strip()]
        except OSError:
            events = []
        with contextlib.suppress(OSError):
            os.unlink(self.log)
        if prune:
            self._prune({key for _, key in events})
        kinds = [event for event, _ in events]
        return FitCounts(kinds.count("hit"), kinds.count("fit"), kinds.count("fail"), kinds.count("nokey"))

    def _prune(self, used: set[str]) -> None:
        for path in Path(self.folder).glob(f"*{ENTRY}"):
            with contextlib.suppress(OSError):
                if path.name[: -len(ENTRY)] not in used and path.stat().st_mtime < self.started:
                    path.unlink()


def _remove_stale(folder: Path) -> None:
    """Temporary files and logs a killed run left behind."""
    now = time.time()
    for pattern in (".*.tmp", ".run-*.log"):
        for path in folder.glob(pattern):
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime > STALE_S:
                    path.unlink()


def plain_estimator(estimator: Any) -> Any:
    """``estimator`` as an instance of its own class (the cached subclass removed); same state."""
    base = getattr(type(estimator), "_hpsearch_base", None)
    if base is None:
        return estimator
    plain = _blank(base)
    plain.__dict__.update(vars(estimator))
    return plain


def cached_estimator(estimator: Any, cache: FitCache) -> Any:
    """A copy of ``estimator`` whose fits go through ``cache``."""
    cls = cached_class(type(estimator), cache)
    wrapped = _blank(cls)
    wrapped.__dict__.update(vars(estimator))
    return wrapped


def _blank(cls: Any) -> Any:
    """An instance of ``cls`` without ``__init__`` (its state is set next, as unpickling does)."""
    return cls.__new__(cls)


_CLASSES: dict[tuple[type[Any], FitCache], type[Any]] = {}
_LOCK = threading.Lock()


def cached_class(base: type[Any], cache: FitCache) -> type[Any]:
    """The subclass of ``base`` whose ``fit`` uses ``cache`` (one class per pair, in each process)."""
    with _LOCK:
        cls = _CLASSES.get((base, cache))
        if cls is None:
            namespace = {
                "__module__": __name__,
                "_hpsearch_base": base,
                "_hpsearch_cache": cache,
                "fit": _fit_method(base),
                "__reduce_ex__": _reduce_ex,
            }
            # The base class's name: scikit-learn's messages (fail_reason) name the estimator's class.
            namespace["__qualname__"] = base.__qualname__
            cls = _CLASSES[(base, cache)] = type(base.__name__, (base,), namespace)
    return cls


def _fit_method(base: type[Any]) -> Any:
    def fit(self: Any, X: Any, y: Any = None, **fit_params: Any) -> Any:
        return cached_fit(self, X, y, fit_params)

    # The signature scikit-learn inspects (metadata routing) stays the base class's.
    return functools.update_wrapper(fit, base.fit)


def cached_fit(est: Any, X: Any, y: Any, fit_params: dict[str, Any]) -> Any:
    """``est.fit(X, y, **fit_params)`` through its class's cache."""
    cls = type(est)
    base, cache = cls._hpsearch_base, cls._hpsearch_cache
    # What a meta-estimator attached before the fit (scikit-learn's callback context...) is no
    # fitted state: it is neither stored nor replaced by a stored fit's.
    attached = set(vars(est)) - set(est.get_params(deep=False))
    key = cache.key(est, X, y, fit_params)
    fitted = None if key is None else cache.load(key, base)
    if fitted is not None:
        est.__dict__.update(vars(fitted))
        cache.note("hit", key)
        return est
    try:
        base.fit(est, X, y, **fit_params)
    except Exception:
        cache.note("fail", key)
        raise
    if key is None:
        cache.note("nokey", key)
        return est
    entry = _blank(base)
    entry.__dict__.update({k: v for k, v in vars(est).items() if k not in attached})
    cache.store(key, entry)
    cache.note("fit", key)
    return est


def _canonical(value: Any) -> Any:
    """An estimator as its class and public params (nested estimators too), for hashing."""
    if hasattr(value, "get_params") and not isinstance(value, type):
        base = getattr(type(value), "_hpsearch_base", type(value))
        return ("estimator", base, {k: _canonical(v) for k, v in value.get_params(deep=False).items()})
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_canonical(v) for v in value])
    if isinstance(value, dict):
        return ("dict", {k: _canonical(v) for k, v in value.items()})
    return value


def _reduce_ex(self: Any, protocol: Any) -> tuple[Any, ...]:
    cls = type(self)
    getstate = getattr(self, "__getstate__", None)
    state = getstate() if getstate is not None else dict(vars(self))
    return _rebuild, (cls._hpsearch_base, cls._hpsearch_cache, state)


def _rebuild(base: type[Any], cache: FitCache, state: Any) -> Any:
    """Unpickle a cached estimator (in an ``n_jobs`` worker, or a deep copy)."""
    cls = cached_class(base, cache)
    obj = _blank(cls)
    setstate = getattr(obj, "__setstate__", None)
    if setstate is not None:
        setstate(state)
    else:
        obj.__dict__.update(state)
    return obj
