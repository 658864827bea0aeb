"""A read-your-writes, in-memory mirror over Optuna's RDB storage.

The study manager is the only writer of its trials, so it can answer the
sampler's and pruner's reads (``get_all_trials`` on every ``ask`` and every
``should_prune``) from memory instead of re-querying SQL each time; measured,
those reads were most of the per-trial cost. Every write still goes to the
database first (nothing is ever only in memory), and trials written by other
processes (other drivers on the same study) are pulled in incrementally at
most every ``refresh_s`` seconds, through Optuna's own ``_CachedStorage``.

Lost connections (a PostgreSQL restart or failover, a network blip) are
retried with exponential backoff for up to ``retry_s`` seconds per call,
with a masked warning per retry; nothing is ever kept only in memory, so a
trial is reported finished only once the database holds it. Retrying a
write whose commit went through but whose acknowledgement was lost:

* attributes, params, intermediate values: upserts, so a second write is a no-op;
* finishing a trial (``tell``): the retry finds the trial already finished with
  the same state, and counts as success;
* claiming a WAITING trial: the retry finds it RUNNING and claims it (two
  drivers claiming the same queued trial in that same instant would both run it);
* creating a trial: the retry creates a second one; the first is a "ghost",
  RUNNING with no task behind it. Trials created here carry ``trial_system_attrs``
  (the manager's driver id) in the same transaction, so the manager recognises
  its ghosts (:meth:`MirroredStorage.ghosts`) and marks them FAIL. The same
  holds for Optuna's own internal retry of trial creation.

Batching (:meth:`MirroredStorage.batch`): inside a ``with storage.batch():``
block, a trial's params, attributes and intermediate values reach memory at
once and the database together, in one transaction, with the next finishing
state change (``tell``) or when the block ends. The manager wraps one ``ask``
(the params and the sampler's attributes of the new trial) and one trial's
end (its attributes, its artifact references and its final state) in such
blocks, and hands nothing to a worker, and reports nothing finished, before
the block has committed:
the database still holds everything the outside world has seen. A driver
killed inside a block leaves a RUNNING trial without params (recovered as
orphaned, and not re-queued, since it never ran) or a RUNNING trial that
ran (recovered as orphaned and re-queued with its params).

Optuna's private API: this class implements Optuna's storage interface over
Optuna's own RDB storage, so it uses some of Optuna's internals; each use says
why on its line (``# Optuna private: ...``). Optuna's storage contract suite
runs over this class (tests/core/test_mirror_storage.py), so a change in them
fails a test. The study manager's own uses live in :mod:`hpsearch.storage._optuna`.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import logging
import os
import threading
import time
from collections.abc import Callable, Container, Iterator, Sequence
from typing import Any, TypeVar

from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage, RDBStorage

# Optuna private: _CachedStorage is the incremental reader of other processes' trials
# (only trials changed since the last read come back); optuna.storages exports no such class.
from optuna.storages._cached_storage import _CachedStorage
from optuna.study import StudyDirection

# Optuna private: FrozenStudy is what BaseStorage.get_all_studies returns, but optuna.study does not export it.
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState

__all__ = ["MirroredStorage", "is_transient", "storage_retry_s", "RETRY_ENV", "RETRY_S"]

_T = TypeVar("_T")
#: A trial's end as one batch writes it: trial id, state, values, time.
_Finish = tuple[int, TrialState, Sequence[float] | None, datetime.datetime]
_log = logging.getLogger("hpsearch.storage")
#: Default bound, in seconds, on retrying one storage call after a lost connection.
RETRY_S = 60.0
#: Environment variable overriding RETRY_S; read when a storage is made, not at import.
RETRY_ENV = "HPSEARCH_STORAGE_RETRY_S"


def storage_retry_s() -> float:
    """``$HPSEARCH_STORAGE_RETRY_S`` as seconds (default 60), or a ConfigError naming it."""
    import math

    from hpsearch.errors import ConfigError

    raw = os.environ.get(RETRY_ENV)
    if raw is None or not raw.strip():
        return RETRY_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not value >= 0:  # also refuses nan
        raise ConfigError(f"{RETRY_ENV}: expected a number of seconds >= 0, got {raw!r}")
    return value


#: Server errors that a retry cannot fix although the driver reports them as operational.
_PERMANENT = ("authentication failed", "does not exist", "permission denied", "no pg_hba.conf entry")


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or its cause) is a lost or refused database connection.

    SQLite errors never are: its "database is locked" already waits out the busy timeout.
    """
    import sqlalchemy.exc as sa

    seen = 0
    e: BaseException | None = exc
    while e is not None and seen < 10:
        if isinstance(e, sa.DBAPIError):
            if "sqlite" in type(e.orig).__module__:
                return False
            if e.connection_invalidated:
                return True
            if isinstance(e, (sa.OperationalError, sa.InterfaceError)):
                msg = str(e.orig).lower()
                return not any(p in msg for p in _PERMANENT)
            return False
        e = e.__cause__ or e.__context__
        seen += 1
    return False


class MirroredStorage(BaseStorage):
    """Write-through to ``backend``; reads of trials come from memory.

    Args:
        backend: The RDB storage that holds the truth.
        refresh_s: How stale other processes' trials may be in reads.
        retry_s: How long one call retries a lost connection before raising
            (default ``$HPSEARCH_STORAGE_RETRY_S`` or 60, read here); 0 disables retries.
        trial_system_attrs: System attrs written with every trial this storage
            creates without a template, in the same transaction.
    """

    def __init__(
        self,
        backend: RDBStorage,
        *,
        refresh_s: float = 1.0,
        retry_s: float | None = None,
        trial_system_attrs: dict[str, Any] | None = None,
    ) -> None:
        self.backend = backend
        self._remote = _CachedStorage(backend)
        self._refresh_s = refresh_s
        self.retry_s = storage_retry_s() if retry_s is None else retry_s
        self.trial_system_attrs = dict(trial_system_attrs or {})
        #: Lost connections retried so far (the manager looks for ghosts when it grows).
        self.retries = 0
        self._lock = threading.RLock()
        self._trials: dict[int, dict[int, FrozenTrial]] = {}  # study -> trial id -> trial
        self._source: dict[int, FrozenTrial] = {}  # trial id -> remote object last copied
        self._study_of: dict[int, int] = {}
        self._synced: dict[int, float] = {}
        self._batch = threading.local()  # .ops: queued writes of this thread's open batch
        self._pending: set[int] = set()  # trials with queued writes: a sync must not overwrite them

    # ------------------------------------------------------------ batching

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Commit this thread's trial writes inside the block in one transaction.

        Params, user and system attributes and intermediate values are applied to
        memory at once and queued; a finishing ``set_trial_state_values`` commits
        the queue and the state together, and leaving the block commits what is
        left. Claiming a WAITING trial commits the queue first, then claims. Blocks
        nest: only the outermost one commits.
        """
        if getattr(self._batch, "ops", None) is not None:
            yield
            return
        self._batch.ops = []
        try:
            yield
        finally:
            ops, self._batch.ops = self._batch.ops, None
            if ops:
                self._commit(ops)

    def _queue(self, op: tuple[Any, ...]) -> bool:
        """Queue ``op`` if this thread is inside a batch; whether it was queued."""
        ops = getattr(self._batch, "ops", None)
        if ops is None:
            return False
        ops.append((*op[:3], copy.deepcopy(op[3]), *op[4:]))
        with self._lock:
            self._pending.add(op[1])
        return True

    def _commit(self, ops: list[tuple[Any, ...]], finish: _Finish | None = None) -> None:
        """Write ``ops`` (and ``finish``: trial id, state, values, time) in one transaction, with retries."""

        def committed_before(e: BaseException) -> None:
            # A retry after a lost acknowledgement: did the first commit go through?
            for kind, trial_id, key, *_ in ops:
                if kind == "param" and key not in self.backend.get_trial(trial_id).params:
                    raise e
            if finish is not None and self.backend.get_trial(finish[0]).state != finish[1]:
                raise e

        touched = {op[1] for op in ops}
        try:
            self._retry("commit", self._write_batch, ops, finish, on_retry_error=committed_before)
        except BaseException:
            # Memory ran ahead of the database: put the database's view back.
            with self._lock:
                for trial_id in touched | ({finish[0]} if finish else set()):
                    sid = self._study_of.get(trial_id)
                    if sid is not None:
                        with contextlib.suppress(Exception):
                            self._trials[sid][trial_id] = self.backend.get_trial(trial_id)
            raise
        finally:
            with self._lock:
                self._pending -= touched

    def _write_batch(self, ops: list[tuple[Any, ...]], finish: _Finish | None) -> None:
        """One transaction: Optuna's own ``*_without_commit`` writes, then the final state."""
        # Optuna private: the RDB models and the scoped session are the only way to write
        # several trials' rows in ONE transaction with Optuna's own SQL (RDBStorage commits each call).
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        b = self.backend
        new_dists: dict[tuple[int, str], BaseDistribution] = {}
        # Attributes: one upsert statement per table, the last value of a key winning.
        attrs: dict[Any, dict[tuple[int, str], Any]] = {
            models.TrialUserAttributeModel: {},
            models.TrialSystemAttributeModel: {},
        }
        with _create_scoped_session(b.scoped_session) as session:
            for kind, trial_id, key, value, *rest in ops:
                if kind == "param":
                    sid = self._study_of.get(trial_id)
                    known = self._param_dists(sid).get(key) if sid is not None else None
                    # Optuna private: the same write as set_trial_param, without its commit.
                    b._set_trial_param_without_commit(session, trial_id, key, value, rest[0], known)
                    if sid is not None:
                        new_dists[(sid, key)] = rest[0]
                elif kind == "iv":
                    # Optuna private: the same write as set_trial_intermediate_value, without its commit.
                    b._set_trial_intermediate_value_without_commit(session, trial_id, key, value)
                else:
                    model = models.TrialUserAttributeModel if kind == "user" else models.TrialSystemAttributeModel
                    attrs[model][(trial_id, key)] = value
            for model, rows in attrs.items():
                if rows:
                    _upsert_attrs(b, session, model, rows)
            if finish is not None:
                _finish_trial(b, session, finish)
        for (sid, key), dist in new_dists.items():
            self._param_dists(sid).setdefault(key, dist)

    def _param_dists(self, study_id: int) -> dict[str, BaseDistribution]:
        """The study's known param distributions (shared with Optuna's cache)."""
        # Optuna private: the cache's per-study distributions, the ones its own
        # set_trial_param checks against; no public call returns them without a query.
        info = self._remote._studies.get(study_id)
        return info.param_distribution if info is not None else {}

    # ------------------------------------------------------------ retries

    def _retry(
        self, what: str, fn: Callable[..., _T], *args: Any, on_retry_error: Callable[[BaseException], _T] | None = None
    ) -> _T:
        """``fn(*args)``, retried with exponential backoff while the connection is lost.

        ``on_retry_error`` may turn an error raised by a *retry* (not the first
        call) into a result: the first call's commit may have gone through.
        """
        deadline = time.monotonic() + self.retry_s
        delay, attempt = 0.25, 0
        while True:
            try:
                return fn(*args)
            except Exception as e:
                if attempt > 0 and on_retry_error is not None and not is_transient(e):
                    return on_retry_error(e)
                left = deadline - time.monotonic()
                if not is_transient(e) or left <= 0:
                    raise
                attempt += 1
                self.retries += 1
                _log.warning(
                    "storage %s: lost the database connection during %s (%s); retry %d in %.1f s, "
                    "giving up after %.0f s",
                    self._masked_url(),
                    what,
                    self._masked_error(e),
                    attempt,
                    min(delay, left),
                    self.retry_s,
                )
                time.sleep(min(delay, left))
                delay = min(delay * 2, 8.0)

    def _masked_url(self) -> str:
        from hpsearch.storage._urls import mask_url

        return mask_url(str(self.backend.url))

    def _masked_error(self, e: BaseException) -> str:
        from hpsearch.errors import one_line
        from hpsearch.storage._urls import mask_secrets, url_password

        cause = e.__cause__ if e.__cause__ is not None else e
        orig = getattr(cause, "orig", cause)
        text = one_line(f"{type(orig).__name__}: {str(orig).splitlines()[0] if str(orig) else ''}")
        return mask_secrets(text, url_password(str(self.backend.url)))[:300]

    def ghosts(self, study_id: int, running: Container[int]) -> list[FrozenTrial]:
        """RUNNING trials stamped with ``trial_system_attrs`` whose number is not in ``running``.

        These are trials created twice after a lost acknowledgement (see the module doc).
        """
        if not self.trial_system_attrs:
            return []
        with self._lock:
            trials = list(self._sync(study_id, force=True).values())
        return [
            t
            for t in trials
            if t.state == TrialState.RUNNING
            and t.number not in running
            and all(t.system_attrs.get(k) == v for k, v in self.trial_system_attrs.items())
        ]

    # ------------------------------------------------------------ studies

    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        return self._retry("create_new_study", self._remote.create_new_study, directions, study_name)

    def delete_study(self, study_id: int) -> None:
        self._retry("delete_study", self._remote.delete_study, study_id)
        with self._lock:
            for tid in self._trials.pop(study_id, {}):
                self._study_of.pop(tid, None)
                self._source.pop(tid, None)
            self._synced.pop(study_id, None)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._retry("set_study_user_attr", self._remote.set_study_user_attr, study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._retry("set_study_system_attr", self._remote.set_study_system_attr, study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._remote.get_study_id_from_name(study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._remote.get_study_name_from_id(study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self._remote.get_study_directions(study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._remote.get_study_user_attrs(study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._remote.get_study_system_attrs(study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        return self._remote.get_all_studies()

    # ------------------------------------------------------------ trials

    def _sync(self, study_id: int, *, force: bool = False) -> dict[int, FrozenTrial]:
        now = time.monotonic()
        mirror = self._trials.setdefault(study_id, {})
        if force or now - self._synced.get(study_id, -1e18) >= self._refresh_s:
            for t in self._retry("get_all_trials", self._remote.get_all_trials, study_id, False):
                # Optuna private: FrozenTrial._trial_id is the storage key; FrozenTrial exposes only its number.
                # Finished trials come back as the same cached object: copy only changes.
                if self._source.get(t._trial_id) is not t and t._trial_id not in self._pending:
                    mirror[t._trial_id] = copy.deepcopy(t)
                    self._source[t._trial_id] = t
                    self._study_of[t._trial_id] = study_id
            self._synced[study_id] = now
        return mirror

    def _mine(self, trial_id: int) -> FrozenTrial | None:
        """A fresh shallow copy of the mirrored trial, installed in its place.

        Copy-on-write: lists handed out by ``get_all_trials(deepcopy=False)``
        keep the old object, so a later write never changes them.
        """
        sid = self._study_of.get(trial_id)
        if sid is None or trial_id not in self._trials[sid]:
            return None
        t = copy.copy(self._trials[sid][trial_id])
        self._trials[sid][trial_id] = t
        return t

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        if template_trial is None and self.trial_system_attrs:
            # The same trial Optuna would create, stamped in the same transaction.
            template_trial = FrozenTrial(
                number=-1,
                state=TrialState.RUNNING,
                value=None,
                values=None,
                datetime_start=datetime.datetime.now(),
                datetime_complete=None,
                params={},
                distributions={},
                user_attrs={},
                system_attrs=dict(self.trial_system_attrs),
                intermediate_values={},
                trial_id=-1,
            )
        elif template_trial is not None and template_trial.state == TrialState.WAITING and self.trial_system_attrs:
            # A queued trial (enqueue_trial) is stamped too: claimed and then killed before the
            # claimer's stamp commits, it still names a driver, so recovery finds it as an orphan.
            template_trial = _with_system_attrs(template_trial, self.trial_system_attrs)
        trial_id = self._retry("create_new_trial", self._remote.create_new_trial, study_id, template_trial)
        trial = self._created(trial_id)
        with self._lock:
            self._sync(study_id)
            self._trials[study_id][trial_id] = trial
            self._study_of[trial_id] = study_id
        return trial_id

    def _created(self, trial_id: int) -> FrozenTrial:
        """The trial just created, as Optuna's cache recorded it (no read back)."""
        # Optuna private: the cache records each trial it creates; reading it saves a query per ask.
        where = self._remote._trial_id_to_study_id_and_number.get(trial_id)
        if where is None:
            return self._retry("get_trial", self.backend.get_trial, trial_id)
        sid, number = where
        return copy.deepcopy(self._remote._studies[sid].trials[number])

    def set_trial_param(
        self, trial_id: int, param_name: str, param_value_internal: float, distribution: BaseDistribution
    ) -> None:
        if not self._queue(("param", trial_id, param_name, param_value_internal, distribution)):
            self._retry(
                "set_trial_param",
                self._remote.set_trial_param,
                trial_id,
                param_name,
                param_value_internal,
                distribution,
            )
        with self._lock:
            t = self._mine(trial_id)
            if t is not None:
                t.params = {**t.params, param_name: distribution.to_external_repr(param_value_internal)}
                t.distributions = {**t.distributions, param_name: distribution}

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        with self._lock:
            for t in self._trials.get(study_id, {}).values():
                if t.number == trial_number:
                    return t._trial_id  # Optuna private: the storage key (see _sync)
        return self._remote.get_trial_id_from_study_id_trial_number(study_id, trial_number)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        ops = getattr(self._batch, "ops", None)
        now = datetime.datetime.now()
        if ops and state.is_finished():
            # The queued writes and the final state, in one transaction.
            self._batch.ops = []
            self._commit(ops, (trial_id, state, values, now))
            changed = True
        else:
            if ops:  # a claim: what is queued goes first, on its own
                self._batch.ops = []
                self._commit(ops)
            changed = self._set_state(trial_id, state, values)
        if changed:
            with self._lock:
                t = self._mine(trial_id)
                if t is not None:
                    t.state = state
                    if values is not None:
                        t.values = list(values)  # a new list: copies share nothing mutable
                    if state == TrialState.RUNNING and t.datetime_start is None:
                        t.datetime_start = now
                    if state.is_finished():
                        t.datetime_complete = now
        return changed

    def _set_state(self, trial_id: int, state: TrialState, values: Sequence[float] | None) -> bool:
        def committed_before(e: BaseException) -> bool:
            # A retry after a lost acknowledgement: did the first call go through?
            db = self.backend.get_trial(trial_id)
            if db.state == state and (values is None or db.values == list(values)):
                return True
            raise e

        retries = self.retries
        changed = self._retry(
            "set_trial_state_values",
            self._remote.set_trial_state_values,
            trial_id,
            state,
            values,
            on_retry_error=committed_before,
        )
        if not changed and state == TrialState.RUNNING and self.retries > retries:
            # Claiming a WAITING trial: the first claim committed, its acknowledgement was lost.
            changed = self._retry("get_trial", self.backend.get_trial, trial_id).state == TrialState.RUNNING
        return changed

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        if not self._queue(("iv", trial_id, step, intermediate_value)):
            self._retry(
                "set_trial_intermediate_value",
                self._remote.set_trial_intermediate_value,
                trial_id,
                step,
                intermediate_value,
            )
        with self._lock:
            t = self._mine(trial_id)
            if t is not None:
                t.intermediate_values = {**t.intermediate_values, step: intermediate_value}

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        if not self._queue(("user", trial_id, key, value)):
            self._retry("set_trial_user_attr", self._remote.set_trial_user_attr, trial_id, key, value)
        with self._lock:
            t = self._mine(trial_id)
            if t is not None:
                t.user_attrs = {**t.user_attrs, key: copy.deepcopy(value)}

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        if not self._queue(("system", trial_id, key, value)):
            self._retry("set_trial_system_attr", self._remote.set_trial_system_attr, trial_id, key, value)
        with self._lock:
            t = self._mine(trial_id)
            if t is not None:
                t.system_attrs = {**t.system_attrs, key: copy.deepcopy(value)}

    def get_trial(self, trial_id: int) -> FrozenTrial:
        with self._lock:
            sid = self._study_of.get(trial_id)
            t = None if sid is None else self._trials[sid].get(trial_id)
            if t is not None:
                return copy.deepcopy(t)
        return self._remote.get_trial(trial_id)

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        with self._lock:
            if study_id not in self._trials:
                self._remote.get_study_name_from_id(study_id)  # raises KeyError for unknown studies
            trials = sorted(self._sync(study_id).values(), key=lambda t: t.number)
        if states is not None:
            trials = [t for t in trials if t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    def refresh(self, study_id: int) -> None:
        """Read other writers' trials now instead of waiting for ``refresh_s``."""
        with self._lock:
            self._sync(study_id, force=True)

    def get_n_trials(self, study_id: int, state: tuple[TrialState, ...] | TrialState | None = None) -> int:
        if isinstance(state, TrialState):
            state = (state,)
        return len(self.get_all_trials(study_id, deepcopy=False, states=state))

    def __getstate__(self) -> dict[str, Any]:
        # A pickled copy (e.g. sent to a worker) starts with an empty mirror.
        return {
            "backend": self.backend,
            "refresh_s": self._refresh_s,
            "retry_s": self.retry_s,
            "trial_system_attrs": self.trial_system_attrs,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["backend"],
            refresh_s=state["refresh_s"],
            retry_s=state.get("retry_s"),
            trial_system_attrs=state.get("trial_system_attrs"),
        )

    def remove_session(self) -> None:
        self.backend.remove_session()


def _finish_trial(backend: RDBStorage, session: Any, finish: _Finish) -> None:
    """Write a trial's values and final state in ``session`` (what ``set_trial_state_values`` writes)."""
    from optuna.storages._rdb import models  # Optuna private: see _write_batch

    trial_id, state, values, now = finish
    # Optuna private: the row locked FOR UPDATE, as RDBStorage.set_trial_state_values does.
    trial = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
    backend.check_trial_is_updatable(trial_id, trial.state)  # type: ignore[arg-type] # a TrialState at runtime
    for objective, v in enumerate(values or ()):
        # Optuna private: the same write as set_trial_state_values' values, without its commit.
        backend._set_trial_value_without_commit(session, trial, objective, v)
    trial.state = state
    trial.datetime_complete = now


def _upsert_attrs(backend: RDBStorage, session: Any, model_cls: Any, rows: dict[tuple[int, str], Any]) -> None:
    """Write trial attributes ``{(trial_id, key): value}`` with one upsert statement.

    The same rows Optuna's ``_set_trial_attr_without_commit`` writes one by one
    (each with its own trial lookup); other dialects go through that function.
    """
    import json

    # Optuna private: the attribute tables' models (see _write_batch).
    from optuna.storages._rdb import models

    for trial_id in {t for t, _ in rows}:
        trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
        backend.check_trial_is_updatable(trial_id, trial.state)  # type: ignore[arg-type] # a TrialState at runtime
    name = backend.engine.name
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
    else:
        for (trial_id, key), value in rows.items():
            # Optuna private: the same write as set_trial_*_attr, without its commit.
            backend._set_trial_attr_without_commit(session, model_cls, trial_id, key, value)
        return
    stmt = insert(model_cls).values(
        [{"trial_id": t, "key": k, "value_json": json.dumps(v)} for (t, k), v in rows.items()]
    )
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=[model_cls.trial_id, model_cls.key], set_={"value_json": stmt.excluded.value_json}
        )
    )


def _with_system_attrs(trial: FrozenTrial, extra: dict[str, Any]) -> FrozenTrial:
    """A copy of ``trial`` with ``extra`` added to its system attributes (its own win)."""
    return FrozenTrial(
        number=trial.number,
        state=trial.state,
        value=None,
        values=trial.values,
        datetime_start=trial.datetime_start,
        datetime_complete=trial.datetime_complete,
        params=trial.params,
        distributions=trial.distributions,
        user_attrs=trial.user_attrs,
        system_attrs={**extra, **trial.system_attrs},
        intermediate_values=trial.intermediate_values,
        trial_id=trial._trial_id,  # Optuna private: FrozenTrial has no public trial-id accessor
    )
