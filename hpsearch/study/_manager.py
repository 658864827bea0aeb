"""The study manager: Optuna ask/tell in the driver, trials on an executor.

The manager is the only process that writes to storage. It asks Optuna for
params, submits each trial to the executor, turns the trial's intermediate
values into ``trial.report`` + ``should_prune`` decisions that travel back to
the running trial, and tells the final state. It owns failure recovery:
Optuna's heartbeats do not work with ask/tell, so trials left RUNNING by a
dead driver are found here, marked FAIL ("orphaned") and re-run first.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from hpsearch._version import __version__
from hpsearch.search import RETRY_ATTR
from hpsearch.config._study import StudyConfig, _format_validation
from hpsearch.errors import ConfigError, HpsearchError, StudyFailedError, one_line
from hpsearch.study._progress import Progress, ProgressStats
from hpsearch.storage._urls import check_storage, mask_secrets, mask_url, open_storage, url_password
from hpsearch.trainers import TRAINERS, BaseTrainer, TrialResources, trainer_class

if TYPE_CHECKING:
    import optuna

    from hpsearch.executors import BaseExecutor, TrialEvent
    from hpsearch.views._results import StudyResult

__all__ = ["StudyManager", "Interrupted", "Prepared", "prepare", "resolved_config_yaml"]

DRIVER_ATTR = "hpsearch:driver"
HEARTBEAT_PREFIX = "hpsearch:heartbeat:"
#: A driver on another host whose heartbeat is older than this is presumed dead.
HEARTBEAT_STALE_S = 120.0
HEARTBEAT_EVERY_S = 30.0
MODEL_DIR = "model/"


class Interrupted(HpsearchError):
    """The run was stopped with Ctrl-C; the next run resumes it."""

    exit_code = 130


@dataclass
class Prepared:
    """Everything checked and built before storage is touched."""

    config: StudyConfig
    file: str
    trainer: BaseTrainer
    distributions: dict[str, Any]
    sampler: Any
    pruner: Any
    storage_url: str


def _prefixed(err: HpsearchError, file: str) -> HpsearchError:
    text = str(err)
    if text.startswith(file):
        return err
    new = type(err)(f"{file}: {text}")
    return new


def build_trainer(cfg: StudyConfig) -> BaseTrainer:
    file = cfg.file
    kind = cfg.trainer.kind
    if kind not in TRAINERS:
        raise ConfigError(f"{file}: trainer.kind: unknown trainer {kind!r}; choose one of: {', '.join(TRAINERS)}")
    cls = trainer_class(kind)
    try:
        settings = cls.Settings.model_validate(cfg.trainer_settings)
    except ValidationError as e:
        msg = _format_validation(e, file)
        raise ConfigError(msg.replace(f"{file}: ", f"{file}: trainer.", 1)) from None
    return cls(settings, study_dir=cfg.study_dir, objective=cfg.objective.metric)


def prepare(cfg: StudyConfig, *, check_trainer: bool = True) -> Prepared:
    """Validate the whole study (sampler, pruner, trainer, storage) without writing."""
    from hpsearch.search import make_pruner, make_sampler
    from hpsearch.search import to_distributions

    file = cfg.file
    if cfg.n_trials is None and cfg.timeout is None and cfg.sampler.name != "grid":
        raise ConfigError(f"{file}: n_trials: set n_trials or timeout, or the study never ends")
    sampler = make_sampler(cfg)
    pruner = make_pruner(cfg)
    distributions = to_distributions(cfg)
    trainer = build_trainer(cfg)
    if cfg.resources.workers > 1 and not trainer.supports_workers:
        raise ConfigError(
            f"{file}: resources.workers: trainer {trainer.kind!r} runs on one worker; set workers: 1"
        )
    if cfg.resources.workers > 1 and cfg.executor != "ray":
        raise ConfigError(
            f"{file}: resources.workers: data-parallel trials run through Ray Train; "
            "use executor: ray or set workers: 1"
        )
    if check_trainer:
        try:
            trainer.validate(set(cfg.search_space))
        except HpsearchError as e:
            raise _prefixed(e, file) from None
        check_objective(trainer, cfg)
    if cfg.executor == "ray":
        check_ray_installed(file)
        check_ray_address(cfg.ray.address or os.environ.get("RAY_ADDRESS"), file)
    url = cfg.resolved_storage()
    check_storage(url, file=file)
    return Prepared(cfg, file, trainer, distributions, sampler, pruner, url)


def check_objective(trainer: BaseTrainer, cfg: StudyConfig) -> None:
    """Refuse an ``objective.metric`` the trainer never returns (when it can tell in advance)."""
    known = trainer.metrics()
    metric = cfg.objective.metric
    if known is not None and metric not in known:
        raise ConfigError(
            f"{cfg.file}: objective.metric: {metric!r} is not a metric trainer {trainer.kind!r} "
            f"returns; use one of: {', '.join(sorted(known))}"
        )


def check_ray_installed(file: str) -> None:
    """Refuse ``executor: ray`` without Ray installed, before anything is written.

    Only looks Ray up: importing it here would fix its settings (loopback, token
    auth) before the executor has set them.
    """
    import importlib.util

    try:
        found = importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ConfigError(
            f"{file}: executor: ray is not installed; pip install 'ray[default,train]', "
            "or run with --executor local"
        )


def check_ray_address(address: str | None, file: str, *, timeout: float = 5.0) -> None:
    """Refuse an unreachable ``host:port`` before anything is written.

    Ray itself retries a dead address for minutes; a TCP connect answers in seconds.
    """
    if not address or address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{file}: ray.address: expected host:port or ray://host:port, got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConfigError(
            f"{file}: ray.address: cannot reach Ray at {address} ({e.strerror or e}); start the "
            "cluster (ray start --head) or fix the address, or drop it to run on a local Ray"
        ) from None


def resolved_config_yaml(cfg: StudyConfig) -> str:
    """The fully resolved study as YAML, with the storage password masked."""
    data = cfg.model_dump(mode="json", exclude={"source"})
    data["storage"] = mask_url(cfg.resolved_storage())
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _proc_start(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except OSError:
        return ""


def driver_id() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_proc_start(pid)}"


def driver_alive(ident: str, heartbeats: dict[str, float], now: float) -> bool:
    host, _, rest = ident.partition(":")
    pid_s, _, start = rest.partition(":")
    if host == socket.gethostname():
        try:
            pid = int(pid_s)
        except ValueError:
            return False
        if not os.path.exists(f"/proc/{pid}") and not _pid_exists(pid):
            return False
        return not start or _proc_start(pid) in ("", start)
    beat = heartbeats.get(ident)
    return beat is not None and now - beat < HEARTBEAT_STALE_S


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class _Running:
    trial: optuna.trial.Trial
    params: dict[str, Any]
    attempt: int
    stop_requested: bool = False


class StudyManager:
    """Runs a study to its budget, resuming whatever the storage already holds.

    Args:
        config: The validated study.
        executor: Where trials run; default from ``config.executor``.
        more: Run this many trials beyond those already finished, instead of
            filling up to ``n_trials``.
        progress: Show live progress (default: when stderr is a terminal).
    """

    def __init__(
        self,
        config: StudyConfig,
        *,
        executor: BaseExecutor | None = None,
        more: int | None = None,
        progress: bool | None = None,
    ) -> None:
        self.config = config
        self.prepared = prepare(config)
        self._executor = executor
        self.more = more
        self._progress = Progress(config.name, enabled=progress)
        self._driver = driver_id()
        self._running: dict[int, _Running] = {}
        self._failures = 0
        self._interrupts = 0
        self._stats = ProgressStats()
        self._last_heartbeat = 0.0
        self._target = 0
        self._artifact_store: Any = None
        self._best: float | None = None
        self._ghost_retries = 0
        self._ghost_at = time.monotonic()
        #: The storage password (as written in the URL and decoded): masked in all trainer data stored.
        self._secrets = _storage_secrets(self.prepared.storage_url)

    # ------------------------------------------------------------ set-up

    def _make_executor(self) -> BaseExecutor:
        from hpsearch.executors import make_executor

        cfg = self.config
        if cfg.executor == "local":
            return make_executor("local", max_concurrent=cfg.max_concurrent_trials)
        return make_executor(
            "ray",
            address=cfg.ray.address,
            max_concurrent=cfg.max_concurrent_trials,
            namespace=cfg.ray.namespace,
            warm=None if self.prepared.trainer.imports_trials else (self.prepared.trainer, self._resources()),
        )

    def _open_study(self) -> optuna.Study:
        import optuna
        import sqlalchemy.exc

        optuna.logging.set_verbosity(optuna.logging.WARNING)

        from hpsearch.storage._mirror import MirroredStorage, storage_retry_s

        p = self.prepared
        retry_s = storage_retry_s()  # a bad $HPSEARCH_STORAGE_RETRY_S is refused before the database is opened
        # Trials are stamped with this driver in the transaction that creates them, so a
        # trial created twice after a lost connection is recognised (see _fail_ghosts).
        storage = MirroredStorage(
            open_storage(p.storage_url), retry_s=retry_s, trial_system_attrs={DRIVER_ATTR: self._driver}
        )
        direction = self.config.objective.direction
        for attempt in range(5):
            try:
                study = optuna.create_study(
                    study_name=self.config.name,
                    storage=storage,
                    sampler=p.sampler,
                    pruner=p.pruner,
                    direction=direction,
                    load_if_exists=True,
                )
                break
            except sqlalchemy.exc.IntegrityError:
                # Another driver created it at the same moment: load it.
                time.sleep(0.1 * (attempt + 1))
        else:  # pragma: no cover - five collisions in a row
            raise HpsearchError(f"{p.file}: name: could not create or load study {self.config.name!r}")
        if study.direction.name.lower() != direction:
            raise ConfigError(
                f"{p.file}: objective.direction: study {self.config.name!r} in storage was created "
                f"with direction {study.direction.name.lower()}; keep it or rename the study"
            )
        _name_objective(study, self.config.objective.metric)
        self._check_compatible(study)
        return study

    def _check_compatible(self, study: optuna.Study) -> None:
        attrs = study.user_attrs
        space = json.dumps(
            {k: v.model_dump(mode="json") for k, v in self.config.search_space.items()}, sort_keys=True
        )
        stored = attrs.get("hpsearch.search_space")
        if stored is not None and stored != space and study.get_trials(deepcopy=False):
            raise ConfigError(
                f"{self.prepared.file}: search_space: differs from the one study "
                f"{self.config.name!r} was run with; rename the study (name:) to start a new one"
            )
        updates = {
            "hpsearch.search_space": space,
            "hpsearch.config._study": resolved_config_yaml(self.config),
            "hpsearch.version": __version__,
            "hpsearch.trainer": self.config.trainer.kind,
            "hpsearch.objective": self.config.objective.metric,
        }
        if self.config.source:
            updates["hpsearch.study_file"] = str(self.config.source)
        for key, value in updates.items():
            if attrs.get(key) != value:
                study.set_user_attr(key, value)

    def _recover_orphans(self, study: optuna.Study) -> int:
        """Mark RUNNING trials of dead drivers FAIL ("orphaned") and queue their params."""
        from optuna.trial import TrialState

        now = time.time()
        sys_attrs = study._storage.get_study_system_attrs(study._study_id)
        beats = {k[len(HEARTBEAT_PREFIX):]: v for k, v in sys_attrs.items() if k.startswith(HEARTBEAT_PREFIX)}
        n = 0
        queued = {t.user_attrs.get("hpsearch.retry_of") for t in study.get_trials(deepcopy=False)}
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            ident = t.system_attrs.get(DRIVER_ATTR)
            if ident is None or ident == self._driver or driver_alive(ident, beats, now):
                continue
            # Not the trial's fault: the re-run keeps its attempt number. A trial
            # without params died in its ask, before it was sent anywhere (unless it
            # was a queued retry: its params are the fixed ones). Queued before the
            # orphan is failed, so a driver killed in between loses no re-run; the
            # next driver finds the orphan still RUNNING and its re-run queued.
            params = t.params or t.system_attrs.get("fixed_params") or {}
            if params and t.number not in queued:
                self._requeue(study, params, t.number, int(t.user_attrs.get("hpsearch.attempt", 1)))
            study._storage.set_trial_user_attr(t._trial_id, "fail_reason", "orphaned")
            study._storage.set_trial_system_attr(t._trial_id, RETRY_ATTR, True)
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            n += 1
        return n

    def _requeue(self, study: optuna.Study, params: dict[str, Any], number: int, attempt: int) -> None:
        """Queue ``params`` to run next, as attempt number ``attempt``."""
        if self.config.sampler.name == "grid":
            return  # the grid sampler re-runs failed points marked for retry first
        study.enqueue_trial(params, user_attrs={"hpsearch.retry_of": number, "hpsearch.attempt": attempt})

    # ------------------------------------------------------------ the loop

    def run(self) -> StudyResult:
        from hpsearch.storage._locks import StudyLock

        study = self._open_study()
        self.study = study
        self._lock = StudyLock(self.prepared.storage_url, self.config.name, self._driver)
        with self._lock.hold():
            study._storage.refresh(study._study_id)
            orphans = self._recover_orphans(study)
        self._init_target(study)
        self.prepared.trainer.prepare()
        executor = self._executor or self._make_executor()
        old_handler = None
        if threading.current_thread() is threading.main_thread():
            old_handler = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            with self._progress:
                importing = self.prepared.trainer.imports_trials
                if not (self._import_wanted(study) if importing else self._want_more(study)):
                    return self._finish(orphans)
                executor.start()
                try:
                    if importing:
                        self._run_import(study, executor)
                    else:
                        self._loop(study, executor)
                except KeyboardInterrupt:
                    self._abandon_running(study, executor)
                    raise Interrupted(
                        f"interrupted; {len(self._running)} running trial(s) marked FAIL and queued; "
                        "run the same command again to resume"
                    ) from None
                finally:
                    executor.shutdown()
        finally:
            self._lock.close()
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
        return self._finish(orphans)

    def _finish(self, orphans: int) -> StudyResult:
        from hpsearch.views._results import StudyResult

        result = StudyResult(self.config.name, self.prepared.storage_url, config=self.config)
        result.__dict__["study"] = self.study  # reuse the open study: no second engine on the file
        result.orphans_recovered = orphans
        if self._interrupts:
            raise Interrupted("interrupted after the running trials stopped; run the same command again to resume")
        if self._failures >= self.config.max_failures:
            raise StudyFailedError(
                f"{self.prepared.file}: study {self.config.name!r} stopped after {self._failures} failed "
                f"trials (max_failures: {self.config.max_failures}); see `hpsearch show` for the reasons"
            )
        return result

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self._interrupts += 1
        if self._interrupts >= 2:
            raise KeyboardInterrupt

    def _counts(self, study: optuna.Study) -> tuple[int, int]:
        from optuna.trial import TrialState

        done = active = 0
        for t in study.get_trials(deepcopy=False):
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
                done += 1
            elif t.state == TrialState.RUNNING:
                active += 1
        return done, active

    def _init_target(self, study: optuna.Study) -> None:
        done, _ = self._counts(study)
        if self.more is not None:
            self._target = done + self.more
        elif self.config.n_trials is not None:
            self._target = self.config.n_trials
        else:
            self._target = math.inf  # type: ignore[assignment]
        if self.config.sampler.name == "grid":
            size = len(self.prepared.sampler._all_grids)
            self._target = min(self._target, size) if self.more is None else self._target
        self._stats.total = None if self._target == math.inf else int(self._target)
        self._refresh_stats(study)

    def _refresh_stats(self, study: optuna.Study) -> None:
        from optuna.trial import TrialState

        s = self._stats
        s.done = s.pruned = 0
        best = None
        sign = 1 if self.config.objective.direction == "maximize" else -1
        for t in study.get_trials(deepcopy=False):
            if t.state == TrialState.COMPLETE:
                s.done += 1
                if t.value is not None and (best is None or sign * t.value > sign * best):
                    best = t.value
            elif t.state == TrialState.PRUNED:
                s.done += 1
                s.pruned += 1
        s.best = best
        self._best = best
        s.running = len(self._running)
        s.failed = self._failures
        self._progress.update(s)
        from hpsearch.views._notes import on_progress

        on_progress(self, study)  # the dashboard note: rate-limited, never raises

    def _want_more(self, study: optuna.Study) -> bool:
        if self.config.sampler.name == "grid" and self.prepared.sampler.is_exhausted(study):
            return False
        done, active = self._counts(study)
        return done + active < self._target

    def _loop(self, study: optuna.Study, executor: BaseExecutor) -> None:
        from hpsearch.executors import EventKind

        cfg = self.config
        resources = self._resources()
        deadline = time.monotonic() + cfg.timeout if cfg.timeout else math.inf
        while True:
            stopping = (
                self._interrupts > 0
                or self._failures >= cfg.max_failures
                or time.monotonic() >= deadline
            )
            if self._interrupts and not any(r.stop_requested for r in self._running.values()):
                self._request_stop_all(executor)
            if not stopping:
                self._fill(study, executor, resources)
            self._fail_ghosts(study)
            if not self._running:
                if self._fail_ghosts(study, force=True):
                    continue
                break
            for event in executor.poll(timeout=0.5):
                if event.kind is EventKind.REPORT:
                    self._on_report(event, executor)
                else:
                    self._on_finished(study, event)
                    if not self._interrupts and self._failures < cfg.max_failures and time.monotonic() < deadline:
                        # Refill the freed slot before handling the next event, so
                        # short trials do not fall into lockstep with the driver.
                        self._fill(study, executor, resources)
            self._heartbeat(study)

    def _resources(self) -> TrialResources:
        r = self.config.resources
        return TrialResources(cpus=r.cpus, gpus=r.gpus, workers=r.workers, custom=dict(r.custom))

    def _fill(self, study: optuna.Study, executor: BaseExecutor, resources: TrialResources) -> None:
        """Submit trials while the executor has free slots and the study wants more."""
        while executor.free_slots(resources) > 0:
            # Count and ask under the study lock: with several drivers on one
            # study the total stays exact and no grid point is taken twice.
            with self._lock.hold() as stale:
                if stale:
                    study._storage.refresh(study._study_id)
                if not self._want_more(study):
                    break
                self._submit(study, executor, resources)

    # ------------------------------------------------ whole-search trainers

    def _import_wanted(self, study: optuna.Study) -> bool:
        """A search trainer runs once per study (again only with ``--more``)."""
        return self.more is not None or not study.get_trials(deepcopy=False)

    def _run_import(self, study: optuna.Study, executor: BaseExecutor) -> None:
        """Run a whole-search trainer as one job and import its records as trials."""
        import optuna
        from optuna.distributions import json_to_distribution
        from optuna.trial import TrialState

        from hpsearch.executors import EventKind, TrialJob
        from hpsearch.trainers import RECORDS_ATTR, TrialRecord

        cfg = self.config
        resources = TrialResources(cpus=cfg.resources.cpus, gpus=cfg.resources.gpus, custom=dict(cfg.resources.custom))
        job = TrialJob(-1, {}, self.prepared.trainer, resources, cfg.name, cfg.objective.metric)
        executor.submit(job)
        self._stats.running = 1
        self._progress.update(self._stats)
        outcome = None
        while outcome is None:
            for event in executor.poll(timeout=0.5):
                if event.kind is EventKind.REPORT:
                    executor.decide(event.number, event.step, False)
                elif event.number == -1:
                    outcome = event.outcome
            if self._interrupts:
                executor.cancel(-1)
                raise KeyboardInterrupt
        assert outcome is not None
        if outcome.failure is not None:
            raise StudyFailedError(
                f"{self.prepared.file}: trainer {cfg.trainer.kind!r} failed: "
                f"{mask_secrets(outcome.failure.reason, *self._secrets)}"
            )
        attrs = dict(outcome.user_attrs)
        records = [TrialRecord(**r) for r in attrs.pop(RECORDS_ATTR, [])]
        import datetime as dt

        trials = []
        for rec in records:
            state = TrialState[rec.state]
            end = dt.datetime.now()
            start = end - dt.timedelta(seconds=rec.duration_s or 0.0)
            trials.append(
                optuna.trial.create_trial(
                    state=state,
                    value=rec.value if state == TrialState.COMPLETE else None,
                    params=rec.params,
                    distributions={k: json_to_distribution(v) for k, v in rec.distributions.items()},
                    user_attrs=_masked({**_jsonable_dict(rec.user_attrs), "placement": outcome.placement},
                                       self._secrets),
                )
            )
            trials[-1].datetime_start, trials[-1].datetime_complete = start, end
        study.add_trials(trials)
        # Failed fits are data (FAIL trials with their reason), not a failure budget.
        for key, value in attrs.items():
            study.set_user_attr(mask_secrets(key, *self._secrets), _masked(_jsonable(value), self._secrets))
        if outcome.artifacts:
            self._upload_study_artifacts(study, outcome.artifacts)
        self._refresh_stats(study)

    def _artifact_store_or_create(self) -> Any:
        from optuna.artifacts import FileSystemArtifactStore

        if self._artifact_store is None:
            root = self.config.resolved_artifacts()
            root.mkdir(parents=True, exist_ok=True)
            self._artifact_store = FileSystemArtifactStore(str(root))
        return self._artifact_store

    def _upload_study_artifacts(self, study: optuna.Study, files: dict[str, bytes]) -> None:
        from optuna.artifacts import upload_artifact

        ids = dict(study.user_attrs.get("artifacts", {}))
        with tempfile.TemporaryDirectory(prefix="hps-art-") as tmp:
            for name, data in files.items():
                name = mask_secrets(name, *self._secrets)
                path = Path(tmp) / name.replace("/", "__")
                path.write_bytes(data)
                ids[name] = upload_artifact(
                    artifact_store=self._artifact_store_or_create(), file_path=str(path), study_or_trial=study
                )
        study.set_user_attr("artifacts", ids)

    def _heartbeat(self, study: optuna.Study) -> None:
        now = time.time()
        if now - self._last_heartbeat >= HEARTBEAT_EVERY_S:
            study._storage.set_study_system_attr(study._study_id, HEARTBEAT_PREFIX + self._driver, now)
            self._last_heartbeat = now

    def _fail_ghosts(self, study: optuna.Study, *, force: bool = False) -> int:
        """FAIL this driver's RUNNING trials that no task runs.

        A trial created twice because the database's acknowledgement was lost
        (see hpsearch.storage._mirror) leaves a "ghost". Checked after a retried
        write, every HEARTBEAT_EVERY_S and before the loop ends.
        """
        from optuna.trial import TrialState

        storage = study._storage
        if not hasattr(storage, "ghosts"):
            return 0
        now = time.monotonic()
        if not force and storage.retries == self._ghost_retries and now - self._ghost_at < HEARTBEAT_EVERY_S:
            return 0
        self._ghost_retries, self._ghost_at = storage.retries, now
        ghosts = storage.ghosts(study._study_id, self._running)
        for t in ghosts:
            storage.set_trial_user_attr(t._trial_id, "fail_reason", "duplicate: created twice after a lost database connection")
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        if ghosts:
            self._refresh_stats(study)
        return len(ghosts)

    def _submit(self, study: optuna.Study, executor: BaseExecutor, resources: TrialResources) -> None:
        from hpsearch.executors import TrialJob

        # The new trial's params and attributes commit together, before the job leaves.
        with _batch(study):
            trial = study.ask(self.prepared.distributions)
            if study._storage.get_trial_system_attrs(trial._trial_id).get(DRIVER_ATTR) != self._driver:  # queued: claim it
                study._storage.set_trial_system_attr(trial._trial_id, DRIVER_ATTR, self._driver)
        attempt = int(trial.user_attrs.get("hpsearch.attempt", 1))
        if self.config.sampler.name == "grid":
            attempt += self._grid_failures(study, trial)
        params = dict(trial.params)
        self._running[trial.number] = _Running(trial, params, attempt)
        executor.submit(
            TrialJob(
                number=trial.number,
                params=params,
                trainer=self.prepared.trainer,
                resources=resources,
                study_name=self.config.name,
                objective=self.config.objective.metric,
                best_value=self._best,
                maximize=self.config.objective.direction == "maximize",
            )
        )
        self._stats.running = len(self._running)
        self._progress.update(self._stats)

    @staticmethod
    def _grid_failures(study: optuna.Study, trial: optuna.trial.Trial) -> int:
        """Earlier runs of this grid point that failed by their own fault (for max_retries)."""
        from optuna.trial import TrialState

        gid = study._storage.get_trial_system_attrs(trial._trial_id).get("grid_id")
        return sum(
            1
            for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
            if t.system_attrs.get("grid_id") == gid
            and t.user_attrs.get("fail_reason") not in ("orphaned", "interrupted")
        )

    def _on_report(self, event: TrialEvent, executor: BaseExecutor) -> None:
        run = self._running.get(event.number)
        if run is None:
            return
        if run.stop_requested:
            # The step it finished after the stop is still real work: keep its value.
            run.trial.report(event.value, event.step)
            executor.decide(event.number, event.step, True)
            return
        run.trial.report(event.value, event.step)
        executor.decide(event.number, event.step, run.trial.should_prune())

    def _request_stop_all(self, executor: BaseExecutor) -> None:
        for number, run in self._running.items():
            run.stop_requested = True
            executor.decide(number, math.inf, True)  # type: ignore[arg-type]

    def _on_finished(self, study: optuna.Study, event: TrialEvent) -> None:
        from optuna.trial import TrialState

        run = self._running.pop(event.number, None)
        if run is None:
            return
        outcome = event.outcome
        assert outcome is not None
        trial = run.trial
        attrs: dict[str, Any] = {"placement": outcome.placement}
        attrs.update(outcome.user_attrs)
        if outcome.failure is None and not outcome.pruned and run.stop_requested and self._interrupts:
            pass  # finished its work before the stop arrived: keep the result
        elif run.stop_requested and self._interrupts:
            self._fail(study, run, "interrupted", attrs, retry=True)
            return
        if outcome.failure is not None:
            f = outcome.failure
            # A trainer's error may quote a URL with a password: _write_attrs masks it.
            attrs.update({"fail_type": f.type, "fail_message": f.message, "traceback": f.traceback})
            pruned = f.type == "NonFiniteLoss" and self.config.on_nonfinite_loss == "prune"
            if not pruned:
                retry = f.retriable and run.attempt <= self.config.max_retries
                self._failures += 1
                self._fail(study, run, f.reason, attrs, retry=retry)
                return
            attrs["fail_reason"] = f.reason  # kept as the reason it was pruned
        if outcome.pruned or outcome.failure is not None:
            with _batch(study):  # attributes and state in one transaction
                self._write_attrs(trial, attrs)
                study.tell(trial, state=TrialState.PRUNED)
            self._refresh_stats(study)
            return
        metric = self.config.objective.metric
        value = outcome.metrics.get(metric)
        if value is None or not math.isfinite(value):
            reason = (
                f"trainer returned no metric {metric!r} (got: {', '.join(outcome.metrics) or 'nothing'}); "
                "set objective.metric to one of those"
                if value is None
                else f"non-finite objective value {value}"
            )
            self._failures += 1
            attrs["metrics"] = {k: v for k, v in outcome.metrics.items() if math.isfinite(v)}
            self._fail(study, run, reason, attrs, retry=False)
            return
        attrs["metrics"] = outcome.metrics
        # Artifact references, attributes and state in one transaction; the files are
        # written first, so a reference never points at a missing file.
        with _batch(study):
            if outcome.artifacts:
                attrs["artifacts"] = self._upload_artifacts(trial, outcome.artifacts, value)
            self._write_attrs(trial, attrs)
            study.tell(trial, value)
        self._refresh_stats(study)

    def _fail(self, study: optuna.Study, run: _Running, reason: str, attrs: dict[str, Any], *, retry: bool) -> None:
        from optuna.trial import TrialState

        attrs["fail_reason"] = reason
        if retry:
            # Queued before the FAIL: a driver killed in between leaves the trial RUNNING
            # with its re-run queued, which recovery sees and does not queue twice.
            interrupted = reason == "interrupted"
            self._requeue(study, run.params, run.trial.number, run.attempt + (0 if interrupted else 1))
        with _batch(study):  # attributes and state in one transaction
            self._write_attrs(run.trial, attrs)
            if retry:
                study._storage.set_trial_system_attr(run.trial._trial_id, RETRY_ATTR, True)
            study.tell(run.trial, state=TrialState.FAIL)
        self._refresh_stats(study)

    def _write_attrs(self, trial: optuna.trial.Trial, attrs: dict[str, Any]) -> None:
        """Store ``attrs`` (trainer data among them) with the storage password masked, keys too."""
        for key, value in attrs.items():
            trial.set_user_attr(mask_secrets(key, *self._secrets), _masked(_jsonable(value), self._secrets))

    def _upload_artifacts(self, trial: optuna.trial.Trial, files: dict[str, bytes], value: float) -> dict[str, str]:
        """Upload ``files`` (their names masked) as the trial's artifacts; returns name -> artifact id.

        Inside a batch the references commit with the trial's end (see ``_on_finished``).
        """
        from optuna.artifacts import upload_artifact

        self._artifact_store_or_create()
        sign = 1 if self.config.objective.direction == "maximize" else -1
        is_best = self._best is None or sign * value > sign * self._best
        model = {k: v for k, v in files.items() if k.startswith(MODEL_DIR)}
        ids: dict[str, str] = {}
        with tempfile.TemporaryDirectory(prefix="hps-art-") as tmp:
            for name, data in files.items():
                if name.startswith(MODEL_DIR):
                    continue
                name = mask_secrets(name, *self._secrets)
                path = Path(tmp) / name.replace("/", "__")
                path.write_bytes(data)
                ids[name] = upload_artifact(
                    artifact_store=self._artifact_store, file_path=str(path), study_or_trial=trial
                )
            if model and is_best:
                path = Path(tmp) / "model.tar"
                with tarfile.open(path, "w") as tar:
                    for name, data in model.items():
                        info = tarfile.TarInfo(name[len(MODEL_DIR):])
                        info.size = len(data)
                        import io

                        tar.addfile(info, io.BytesIO(data))
                ids["model.tar"] = upload_artifact(
                    artifact_store=self._artifact_store, file_path=str(path), study_or_trial=trial
                )
        return ids

    def _abandon_running(self, study: optuna.Study, executor: BaseExecutor) -> None:
        """Second Ctrl-C: record running trials as interrupted and queue them again."""
        for number in list(self._running):
            run = self._running.pop(number)
            executor.cancel(number)
            try:
                self._fail(study, run, "interrupted", {}, retry=True)
            except Exception:  # noqa: BLE001 - the next run recovers them as orphans
                pass
            self._running[number] = run  # counted in the message


def _name_objective(study: optuna.Study, metric: str) -> None:
    """Name the study's objective, so the dashboard's axes read the metric, not "Objective 0".

    Written right after the study is created (Optuna has no way to pass it to
    ``create_study``); a run that died in between is healed by the next one,
    and a re-run with the names already set writes nothing.
    """
    import warnings

    import optuna

    if study.metric_names != [metric]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([metric])


def _batch(study: optuna.Study) -> contextlib.AbstractContextManager[None]:
    """One transaction for the trial writes inside (see ``MirroredStorage.batch``)."""
    batch = getattr(study._storage, "batch", None)
    return batch() if batch is not None else contextlib.nullcontext()


def _storage_secrets(url: str) -> tuple[str, ...]:
    """The password of storage ``url``, as written (percent-encoded) and decoded.

    ``user:password@`` and ``?password=`` both count. Passwords under 4 characters are
    left out, as ``mask_secrets`` does for ``PGPASSWORD``: masking them would garble plain text.
    """
    from urllib.parse import parse_qs, unquote, urlsplit

    found = [url_password(url)]
    with contextlib.suppress(ValueError):
        found += parse_qs(urlsplit(url).query).get("password", [])
    return tuple(dict.fromkeys(s for p in found if p for s in (p, unquote(p)) if len(s) >= 4))


def _masked(value: Any, secrets: tuple[str, ...]) -> Any:
    """JSON-like ``value`` with every URL password and each of ``secrets`` masked in its strings and keys."""
    if isinstance(value, str):
        return mask_secrets(value, *secrets)
    if isinstance(value, dict):
        return {mask_secrets(k, *secrets) if isinstance(k, str) else k: _masked(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_masked(v, secrets) for v in value]
    return value


def _jsonable_dict(values: dict[str, Any]) -> dict[str, Any]:
    return {k: _jsonable(v) for k, v in values.items()}


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return one_line(repr(value))[:1000]
