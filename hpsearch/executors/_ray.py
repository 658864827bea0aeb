"""Run trials as Ray tasks: a private local Ray on 127.0.0.1, or a cluster.

Each trial is one task with the study's resource request, so Ray places it on
a node with free CPUs/GPUs/custom resources. Intermediate values travel to
the driver through a small async "hub" actor; the driver long-polls it in the
same ``ray.wait`` as the trial tasks, and answers each report with a decision
the trial waits for in ``should_prune``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import shutil
import tempfile
import time
from typing import Any

from hpsearch.errors import ConfigError, one_line
from hpsearch.executors._base import (
    BaseExecutor,
    EventKind,
    Failure,
    TrialEvent,
    TrialJob,
    TrialOutcome,
    execute_trial,
)
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


class _Hub:
    """Async actor: trials push reports, the driver drains them and decides."""

    def __init__(self) -> None:
        self._events: list[tuple[int, int, float]] = []
        self._new = asyncio.Event()
        self._decisions: dict[int, tuple[float, bool]] = {}
        self._waiters: dict[int, asyncio.Event] = {}
        self._outcomes: dict[int, dict[int, Any]] = {}

    async def report(self, number: int, step: int, value: float) -> None:
        self._events.append((number, step, value))
        self._new.set()

    async def drain(self, timeout: float) -> list[tuple[int, int, float]]:
        if not self._events:
            try:
                await asyncio.wait_for(self._new.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        events, self._events = self._events, []
        self._new.clear()
        return events

    async def decide(self, number: int, step: float, stop: bool) -> None:
        self._decisions[number] = (step, stop)
        self._waiters.setdefault(number, asyncio.Event()).set()

    async def decision(self, number: int, step: int) -> bool:
        while True:
            got = self._decisions.get(number)
            if got is not None and (got[0] >= step or got[1]):
                return got[1]
            ev = self._waiters.setdefault(number, asyncio.Event())
            await ev.wait()
            ev.clear()

    async def put_outcome(self, number: int, rank: int, outcome: Any) -> None:
        self._outcomes.setdefault(number, {})[rank] = outcome

    async def take_outcomes(self, number: int) -> dict[int, Any]:
        return self._outcomes.pop(number, {})

    async def forget(self, number: int) -> None:
        self._decisions.pop(number, None)
        self._waiters.pop(number, None)


class _HubChannel:
    """The trial-side end of the hub (lives in the Ray worker)."""

    def __init__(self, hub: Any) -> None:
        self._hub = hub

    def report(self, trial_number: int, step: int, value: float) -> None:
        self._hub.report.remote(trial_number, step, value)

    def decision(self, trial_number: int, step: int) -> bool:
        import ray

        return bool(ray.get(self._hub.decision.remote(trial_number, step)))


def _run_remote(job: TrialJob, hub: Any) -> TrialOutcome:
    import ray

    if job.resources.workers > 1:
        from hpsearch.executors._ray_train import run_data_parallel

        outcome = run_data_parallel(job, hub)
    else:
        outcome = execute_trial(job, _HubChannel(hub))
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


def prepare_local_ray_env(temp_dir: str) -> None:
    """Environment for a private local Ray: loopback only, token auth, no ~/.ray files.

    Token auth whatever ``RAY_AUTH_MODE`` said (``disabled`` would leave the private Ray
    open to any local process), with ``RAY_AUTH_TOKEN`` if set, else a fresh one: without
    a token in the environment Ray writes one to ``~/.ray/auth_token``.
    Must run before ``import ray``: Ray reads the loopback switch, the auth mode and
    the token at import.
    """
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ["RAY_TMPDIR"] = temp_dir


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
        self._hub: Any = None
        self._remote: Any = None
        self._refs: dict[Any, int] = {}
        self._by_number: dict[int, Any] = {}
        self._drain_ref: Any = None
        self._totals: dict[str, float] = {}
        self._totals_at = 0.0

    def describe(self) -> str:
        return f"ray ({self.address or 'local, 127.0.0.1'})"

    def start(self) -> None:
        if self.address is None:
            # Short path: Ray's socket names must fit in 107 bytes.
            self._temp_dir = tempfile.mkdtemp(prefix="hps-ray-", dir="/tmp" if os.path.isdir("/tmp") else None)
            prepare_local_ray_env(self._temp_dir)
        elif _is_loopback(self.address):
            # A cluster on this machine's 127.0.0.1: without this switch Ray rewrites
            # 127.0.0.1 to the eth0 address and then finds no local node there.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        try:
            import ray
        except ImportError as e:  # installed but broken: prepare() only looked it up
            raise ConfigError(
                f"executor: ray cannot be imported ({one_line(str(e))}); reinstall it "
                "(pip install 'ray[default,train]') or run with --executor local"
            ) from None

        if ray.is_initialized():
            self._started_ray = False
        elif self.address is None:
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
        else:
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
        self._hub = ray.remote(num_cpus=0, max_concurrency=10_000)(_Hub).remote()
        self._remote = ray.remote(max_retries=0)(_run_remote)
        if self.address is None:
            self._warm_workers()  # a cluster's workers are its own

    def _warm_workers(self) -> None:
        """Start the private Ray's worker processes now, with hpsearch imported.

        Otherwise the first trials wait about a second each for a worker to
        start, and then for their imports (torch, transformers: seconds more);
        here that is spent once, in parallel, during start-up, through the
        trainer's ``warm()``. At most :data:`_WARM_WORKERS_MAX`, and no more
        than ``max_concurrent``.
        """
        import ray

        if self.warm is None:
            return
        trainer, r = self.warm
        if r.workers > 1:
            return  # Ray Train starts its own workers
        n = min(self.free_slots(r), _WARM_WORKERS_MAX)
        options: dict[str, Any] = {"num_cpus": r.cpus, "num_gpus": r.gpus, "max_retries": 0}
        if r.custom:
            options["resources"] = dict(r.custom)
        warm = ray.remote(**options)(_warm_worker)
        try:
            self.warmed = dict(ray.get([warm.remote(trainer) for _ in range(max(0, n))], timeout=_WARM_TIMEOUT_S))
        except Exception as e:  # noqa: BLE001 - e.g. the trainer cannot be unpickled there: its trials will say so
            self.warmed = {-1: one_line(f"{type(e).__name__}: {e}")[:300]}
        errors = {e for e in self.warmed.values() if e}
        if errors:
            logging.getLogger("hpsearch.executor").warning(
                "warming the trial workers failed (trials are not affected, their first one is slower): %s",
                sorted(errors)[0],
            )

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

    def poll(self, timeout: float) -> list[TrialEvent]:
        import ray

        if self._drain_ref is None:
            self._drain_ref = self._hub.drain.remote(_DRAIN_WAIT_S)
        waitables = [*self._refs, self._drain_ref]
        ready, _ = ray.wait(waitables, num_returns=1, timeout=timeout)
        if ready:
            more, _ = ray.wait(waitables, num_returns=len(waitables), timeout=0)
            ready = list(dict.fromkeys([*ready, *more]))
        events: list[TrialEvent] = []
        for ref in ready:
            if ref is self._drain_ref:
                for number, step, value in ray.get(ref):
                    events.append(TrialEvent(EventKind.REPORT, number, step=step, value=value))
                self._drain_ref = None
        for ref in ready:
            if ref is self._drain_ref or ref not in self._refs:
                continue
            number = self._refs.pop(ref)
            self._by_number.pop(number, None)
            events.append(TrialEvent(EventKind.FINISHED, number, outcome=self._outcome(ref)))
            self._hub.forget.remote(number)
        return events

    @staticmethod
    def _outcome(ref: Any) -> TrialOutcome:
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
        return TrialOutcome(
            failure=Failure(reason=reason, type="WorkerDied", message=detail, retriable=True)
        )

    def decide(self, number: int, step: int, stop: bool) -> None:
        self._hub.decide.remote(number, step, stop)

    def cancel(self, number: int) -> None:
        import ray

        self._hub.decide.remote(number, math.inf, True)
        ref = self._by_number.pop(number, None)
        if ref is not None:
            self._refs.pop(ref, None)
            ray.cancel(ref, force=True)

    def shutdown(self) -> None:
        import ray

        for number in list(self._by_number):
            self.cancel(number)
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        if self._temp_dir:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None


def _is_loopback(address: str) -> bool:
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


def _object_store_bytes() -> int:
    # Ray reserves 30% of RAM by default; trials exchange params and metrics,
    # plus a saved model at most, so a modest store is plenty.
    return 512 * 1024 * 1024
