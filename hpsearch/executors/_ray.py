"""Run trials as Ray tasks: a private local Ray on 127.0.0.1, or a cluster.

Each trial is one task with the study's resource request, so Ray places it on
a node with free CPUs/GPUs/custom resources. Intermediate values travel to
the driver through the report hub (``_ray_hub``); the driver long-polls it in
the same ``ray.wait`` as the trial tasks. A private Ray changes a few
environment variables (Ray reads them at import, and sets some of its own);
``shutdown`` puts back exactly what changed. ``prestart`` starts a private Ray
on a background thread (``_ray_boot``) while the driver opens its storage.
A trial's output is kept in its worker (fd 1 and 2 through pipes, see
``_output``) and shipped through the hub to the driver, which appends it to
the trial's live log (``TrialJob.log_path``) until the trial ends.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from hpsearch.errors import ConfigError, one_line
from hpsearch.executors._base import (
    BaseExecutor,
    EventKind,
    Failure,
    TrialEvent,
    TrialJob,
    TrialOutcome,
    run_captured,
)
from hpsearch.executors._output import LOG_NAME, SHIP_EVERY_S, LiveLogs, process_output
from hpsearch.executors._ray_boot import BackgroundStart, exit_on_sigterm
from hpsearch.executors._ray_hub import HubChannel, HubLogSink, ReportHub
from hpsearch.executors._ray_train import run_data_parallel
from hpsearch.trainers._base import TrialResources

__all__ = ["RayExecutor"]

#: How long one hub long-poll waits for events before returning empty.
_DRAIN_WAIT_S = 1.0
#: Worker processes a private local Ray starts before the first trial.
_WARM_WORKERS_MAX = 8
#: How long start-up waits for them.
_WARM_TIMEOUT_S = 120.0
#: CPU request of a data-parallel trial's coordinating task (Ray Train reserves the workers).
_COORDINATOR_CPUS = 0.01


def _run_remote(job: TrialJob, hub: Any) -> TrialOutcome:
    import ray

    if job.resources.workers > 1:
        outcome = run_data_parallel(job, hub)
    else:
        sink = HubLogSink(hub, job.number) if job.log_path else None
        outcome = run_captured(job, HubChannel(hub), process_output, sink=sink, ship_every=SHIP_EVERY_S)
        if sink is not None:
            sink.wait()  # the last lines are at the hub before the driver sees the trial end
    ctx = ray.get_runtime_context()
    outcome.placement["node_id"] = ctx.get_node_id()
    outcome.placement["node_ip"] = ray.util.get_node_ip_address()
    return outcome


def _warm_worker(trainer: Any) -> tuple[int, str | None]:
    """Import in this worker what a trial imports (see ``RayExecutor._warm_workers``).

    Returns the worker's pid and the error ``trainer.warm()`` raised, if any.
    """
    import hpsearch.trainers  # noqa: F401 - what every trial imports first

    try:
        trainer.warm()
    except Exception as e:  # noqa: BLE001 - warming is an optimisation; the trial reports real errors
        return os.getpid(), one_line(f"{type(e).__name__}: {e}")[:300]
    return os.getpid(), None


#: The token of every private Ray this process starts: Ray caches the token it
#: first reads, so a second private Ray in the same process must get the same one.
_process_token: str | None = None


def _token() -> str:
    global _process_token
    if _process_token is None:
        _process_token = secrets.token_hex(32)
    return _process_token


def _set_env(changes: dict[str, str]) -> dict[str, str | None]:
    """Apply ``changes`` to ``os.environ``; return the previous value of each key changed."""
    saved: dict[str, str | None] = {}
    for key, value in changes.items():
        if os.environ.get(key) != value:
            saved[key] = os.environ.get(key)
            os.environ[key] = value
    return saved


def restore_env(saved: dict[str, str | None]) -> None:
    """Undo :func:`prepare_local_ray_env` (or :func:`_set_env`): put back each saved value."""
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def prepare_local_ray_env(temp_dir: str) -> dict[str, str | None]:
    """Environment for a private local Ray: loopback only, token auth, no ~/.ray files.

    Token auth whatever ``RAY_AUTH_MODE`` said (``disabled`` would leave the private Ray
    open to any local process), with ``RAY_AUTH_TOKEN`` if set, else this process's
    own random one: without a token in the environment Ray writes one to
    ``~/.ray/auth_token``. Must run before ``import ray``: Ray reads the loopback
    switch, the auth mode and the token at import. Returns what it changed, for
    :func:`restore_env`.
    """
    env = os.environ
    return _set_env(
        {
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": env.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0"),
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": env.get("RAY_AUTH_TOKEN") or _token(),
            "RAY_USAGE_STATS_ENABLED": env.get("RAY_USAGE_STATS_ENABLED", "0"),
            "RAY_TMPDIR": temp_dir,
        }
    )


class RayExecutor(BaseExecutor):
    """Trials as Ray tasks.

    Args:
        address: Ray cluster to join (``ray://`` or ``host:port``); None starts
            a private local Ray bound to 127.0.0.1, with its files in a fresh
            temp folder (so a stale cluster file can never hang it).
        max_concurrent: Upper bound on trials in flight; otherwise the free
            cluster resources decide.
        num_cpus: CPUs of the private local Ray (default: all).
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        max_concurrent: int | None = None,
        num_cpus: int | None = None,
        namespace: str | None = None,
        warm: tuple[Any, TrialResources] | None = None,
    ) -> None:
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        #: (trainer, per-trial resources): a private local Ray starts as many workers
        #: as such trials fit at once and runs the trainer's ``warm()`` in each.
        self.warm = warm
        #: pid -> warm() error (None: warmed) of each worker warmed at start.
        self.warmed: dict[int, str | None] = {}
        self.max_concurrent = max_concurrent
        self.num_cpus = num_cpus
        self.namespace = namespace
        self._started_ray = False
        self._temp_dir: str | None = None
        self._saved_env: dict[str, str | None] = {}
        self._env_before: dict[str, str] = {}
        self._boot: BackgroundStart | None = None
        self._old_sigterm: Any = None
        self._hub: Any = None
        self._remote: Any = None
        self._refs: dict[Any, int] = {}
        self._by_number: dict[int, Any] = {}
        self._drain = _Drain()
        self._totals, self._totals_at = dict[str, float](), 0.0
        #: Live logs of the running trials whose jobs name a ``log_path``, by trial number.
        self._live = LiveLogs()

    def describe(self) -> str:
        return f"ray ({self.address or 'local, 127.0.0.1'})"

    def prestart(self) -> None:
        """Begin starting the private Ray on a background thread; :meth:`start` waits for it.

        The manager calls this before it opens the storage, so the two overlap. A
        cluster address or a Ray already initialised in this process: nothing to do.
        """
        ray = sys.modules.get("ray")
        if self.address is not None or self._boot is not None or (ray is not None and ray.is_initialized()):
            return
        self._env_before = dict(os.environ)
        self._prepare_env()  # on this thread: Ray reads it at import
        self._old_sigterm = exit_on_sigterm()
        self._boot = BackgroundStart(self._connect)
        self._boot.begin()

    def starting(self) -> bool | None:
        """None: :meth:`prestart` not called (or nothing to start); True: Ray still starting; False: started."""
        return None if self._boot is None else not self._boot.done()

    def start(self) -> None:
        """Join the cluster or start the private Ray, then the hub and (private Ray) warm workers."""
        if self._boot is None:
            self._env_before = dict(os.environ)
            self._prepare_env()
            self._connect()
        else:
            self._boot.wait()
        self._note_ray_env()
        if self.address is None:
            self._warm_workers()  # a cluster's workers are its own

    def _note_ray_env(self) -> None:
        """Remember what Ray set of its own at import and init (PYTHONBREAKPOINT, RAY_CLIENT_MODE), once."""
        before, self._env_before = self._env_before, {}
        if not before:
            return
        for key in set(before) | set(os.environ):
            if before.get(key) != os.environ.get(key):
                self._saved_env.setdefault(key, before.get(key))

    def _connect(self) -> None:
        ray = _import_ray()
        if ray.is_initialized():
            self._started_ray = False
        elif self.address is None:
            self._init_private(ray)
        else:
            self._join(ray)
        self._hub, self._drain = _start_hub(ray), _Drain()  # a new hub numbers its batches from 1
        self._remote = ray.remote(max_retries=0)(_run_remote)

    def _prepare_env(self) -> None:
        """Set the environment Ray reads at import; remember what changed, for shutdown."""
        if self.address is None:
            # Short path: Ray's socket names must fit in 107 bytes.
            self._temp_dir = tempfile.mkdtemp(prefix="hps-ray-", dir="/tmp" if os.path.isdir("/tmp") else None)
            self._saved_env = prepare_local_ray_env(self._temp_dir)
        elif _is_loopback(self.address):
            # A cluster on this machine's 127.0.0.1: without this switch Ray rewrites
            # 127.0.0.1 to the eth0 address and then finds no local node there.
            switch = os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            self._saved_env = _set_env({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": switch})

    def _init_private(self, ray: Any) -> None:
        ray.init(
            address="local",
            num_cpus=self.num_cpus,
            _node_ip_address="127.0.0.1",
            _temp_dir=self._temp_dir,
            include_dashboard=False,
            configure_logging=False,
            log_to_driver=True,
            namespace=self.namespace,
            object_store_memory=_object_store_bytes(),
        )
        self._started_ray = True

    def _join(self, ray: Any) -> None:
        try:
            ray.init(address=self.address, namespace=self.namespace, configure_logging=False)
        except Exception as e:  # noqa: BLE001
            raise ConfigError(
                one_line(
                    f"ray.address: cannot join Ray at {self.address!r}: {str(e)[:200]}; check the "
                    "address (ray status on the head) and, with token auth, RAY_AUTH_MODE=token "
                    "and RAY_AUTH_TOKEN"
                )
            ) from None
        self._started_ray = True

    def _warm_workers(self) -> None:
        """Start the private Ray's workers now, each running the trainer's ``warm()`` (see :func:`_warm_all`)."""
        if self.warm is not None and self.warm[1].workers == 1:  # Ray Train starts its own workers
            self.warmed = _warm_all(*self.warm, min(self.free_slots(self.warm[1]), _WARM_WORKERS_MAX))

    def _cluster_totals(self) -> dict[str, float]:
        import ray

        now = time.monotonic()
        if now - self._totals_at > 5.0:
            self._totals = dict(ray.cluster_resources())
            self._totals_at = now
        return self._totals

    def free_slots(self, resources: TrialResources) -> int:
        totals = self._cluster_totals()
        need = {"CPU": resources.cpus * resources.workers, "GPU": resources.gpus * resources.workers}
        need.update({k: v * resources.workers for k, v in resources.custom.items()})
        fits = math.inf
        for key, amount in need.items():
            if amount > 0:
                fits = min(fits, math.floor(totals.get(key, 0.0) / amount + 1e-9))
        if fits == math.inf:
            fits = 1
        if self.max_concurrent is not None:
            fits = min(fits, self.max_concurrent)
        return int(fits) - len(self._by_number)

    def submit(self, job: TrialJob) -> None:
        r = job.resources
        if r.workers > 1:
            # The trial coordinates a Ray Train job that reserves its own workers.
            options: dict[str, Any] = {"num_cpus": _COORDINATOR_CPUS}
        else:
            options = {"num_cpus": r.cpus, "num_gpus": r.gpus}
            if r.custom:
                options["resources"] = dict(r.custom)
        ref = self._remote.options(**options).remote(job, self._hub)
        self._refs[ref] = job.number
        self._by_number[job.number] = ref
        self._live.start(job.number, job.log_path, job.log_max_bytes)

    def poll(self, timeout: float) -> list[TrialEvent]:
        import ray

        drain = self._drain.ref(self._hub)
        waitables = [*self._refs, drain]
        ready, _ = ray.wait(waitables, num_returns=1, timeout=timeout)
        if ready:
            more, _ = ray.wait(waitables, num_returns=len(waitables), timeout=0)
            ready = list(dict.fromkeys([*ready, *more]))
        events: list[TrialEvent] = []
        if drain in ready:
            reports, logs = self._drain.take()
            self._live.append(logs)
            events += [TrialEvent(EventKind.REPORT, n, step=step, value=value) for n, step, value in reports]
        for ref in ready:
            if ref is drain or ref not in self._refs:
                continue
            number = self._refs.pop(ref)
            self._by_number.pop(number, None)
            outcome = _outcome_of(ref)
            # The last lines are at the hub (the trial waited for that): into the live log before the end is told.
            self._live.end(number, _last_lines(self._hub, number) if LOG_NAME in outcome.artifacts else None)
            events.append(TrialEvent(EventKind.FINISHED, number, outcome=outcome))
            self._hub.forget.remote(number)
        return events

    def decide(self, number: int, step: int, stop: bool) -> None:
        self._hub.decide.remote(number, step, stop)

    def cancel(self, number: int) -> None:
        import ray

        self._hub.decide.remote(number, math.inf, True)
        self._live.end(number)
        ref = self._by_number.pop(number, None)
        if ref is not None:
            self._refs.pop(ref, None)
            ray.cancel(ref, force=True)

    def shutdown(self) -> None:
        """Cancel trials, stop the Ray started here, restore the environment (idempotent; fine after prestart alone)."""
        boot, self._boot = self._boot, None
        try:
            if boot is not None:
                with contextlib.suppress(Exception):  # start() has reported it, or nothing ran
                    boot.wait()
                self._note_ray_env()  # start() was never called
            ray = sys.modules.get("ray")
            for number in list(self._by_number):
                self.cancel(number)
            self._live.close()
            if ray is not None and self._started_ray and ray.is_initialized():
                ray.shutdown()
            self._started_ray = False
        finally:
            if boot is not None:
                boot.end()
            if self._temp_dir:
                shutil.rmtree(self._temp_dir, ignore_errors=True)
                self._temp_dir = None
            if self._old_sigterm is not None:
                signal.signal(signal.SIGTERM, self._old_sigterm)
                self._old_sigterm = None
            restore_env(self._saved_env)
            self._saved_env = {}


def _import_ray() -> Any:
    """``import ray``, or a ConfigError saying how to fix a broken install."""
    try:
        import ray
    except ImportError as e:  # installed but broken: prepare() only looked it up
        raise ConfigError(
            f"executor: ray cannot be imported ({one_line(str(e))}); reinstall it "
            "(pip install 'ray[default,train]') or run with --executor local"
        ) from None
    return ray


def _last_lines(hub: Any, number: int) -> Callable[[], bytes]:
    """What the hub still holds of trial ``number``'s output (a callable, for :meth:`LiveLogs.end`)."""
    import ray

    return lambda: ray.get(hub.take_logs.remote(number))


class _Drain:
    """The driver's end of the hub's ``drain``: one call in flight, each acknowledging the batch before.

    The hub sends a batch again until a later call acknowledges it, so a call lost while the
    hub is briefly unreachable (Ray's ``ActorUnavailableError`` as a node goes away: "the task
    may or may not have been executed") loses no report, and no trial waits for a decision forever.
    """

    def __init__(self) -> None:
        self._ref: Any = None
        self._ack = 0

    def ref(self, hub: Any) -> Any:
        if self._ref is None:
            self._ref = hub.drain.remote(_DRAIN_WAIT_S, self._ack)
        return self._ref

    def take(self) -> tuple[list[tuple[int, int, float]], dict[int, bytes]]:
        import ray

        ref, self._ref = self._ref, None
        try:
            seq, reports, logs = ray.get(ref)
        except ray.exceptions.ActorUnavailableError:
            return [], {}  # asked again at the next poll; the hub still holds the batch
        self._ack = seq
        return reports, logs


def _start_hub(ray: Any) -> Any:
    """The report hub actor, on the head node: a worker node lost mid-study must not take with it
    the hub every running trial talks to, and the cluster does not outlive its head anyway. The
    affinity is hard (the hub needs no CPU, so the head can always hold it): a soft one left it
    on a worker node in 3 of 8 runs of the node-loss test."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    heads = [n["NodeID"] for n in ray.nodes() if n.get("Alive") and "node:__internal_head__" in n.get("Resources", {})]
    options: dict[str, Any] = {"num_cpus": 0, "max_concurrency": 10_000}
    if heads:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=heads[0], soft=False)
    return ray.remote(**options)(ReportHub).remote()


def _outcome_of(ref: Any) -> TrialOutcome:
    """The trial task's outcome; a retriable failure when its worker died or it was cancelled."""
    import ray

    try:
        return ray.get(ref)
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as e:
        reason = "worker died"
        detail = one_line(str(e))[:300]
    except ray.exceptions.OutOfMemoryError as e:
        reason = "worker died: killed by Ray's memory monitor (out of memory)"
        detail = one_line(str(e))[:300]
    except ray.exceptions.TaskCancelledError:
        reason, detail = "cancelled", ""
    except ray.exceptions.RayError as e:
        reason = f"worker died: {type(e).__name__}"
        detail = one_line(str(e))[:300]
    return TrialOutcome(failure=Failure(reason=reason, type="WorkerDied", message=detail, retriable=True))


def _warm_all(trainer: Any, r: TrialResources, n: int) -> dict[int, str | None]:
    """Run ``trainer.warm()`` in ``n`` new workers; pid -> warm() error (None: warmed).

    Otherwise the first trials wait about a second each for a worker to start,
    and then for their imports (torch, transformers: seconds more); here that is
    spent once, in parallel, during start-up. At most :data:`_WARM_WORKERS_MAX`,
    and no more than ``max_concurrent``.
    """
    import ray

    options: dict[str, Any] = {"num_cpus": r.cpus, "num_gpus": r.gpus, "max_retries": 0}
    if r.custom:
        options["resources"] = dict(r.custom)
    warm = ray.remote(**options)(_warm_worker)
    try:
        warmed = dict(ray.get([warm.remote(trainer) for _ in range(max(0, n))], timeout=_WARM_TIMEOUT_S))
    except Exception as e:  # noqa: BLE001 - e.g. the trainer cannot be unpickled there: its trials will say so
        warmed = {-1: one_line(f"{type(e).__name__}: {e}")[:300]}
    errors = {e for e in warmed.values() if e}
    if errors:
        logging.getLogger("hpsearch.executor").warning(
            "warming the trial workers failed (trials are not affected, their first one is slower): %s",
            sorted(errors)[0],
        )
    return warmed


def _is_loopback(address: str) -> bool:
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


def _object_store_bytes() -> int:
    # Ray reserves 30% of RAM by default; trials exchange params and metrics,
    # plus a saved model at most, so a modest store is plenty.
    return 512 * 1024 * 1024
