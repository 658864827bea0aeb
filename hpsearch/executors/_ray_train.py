"""One trial on several data-parallel workers, through Ray Train's TorchTrainer.

This replaces the seed article's hand-written
``dist.init_process_group("nccl", rank=rank, world_size=world_size)``: Ray
Train starts the workers, sets up the process group (gloo on CPUs, NCCL on
GPUs) and tears it down. Every rank runs the same trainer with the same
params (sampled once by the manager); only rank 0 reports to the manager,
and the trainer broadcasts each prune/stop decision to all ranks, so no rank
hangs. Each rank hands its outcome to the hub; the coordinating task returns
rank 0's, with a per-rank summary in ``user_attrs["ranks"]``. Every rank
keeps its own output (lines prefixed ``[rank N]``) and ships it live; the
coordinating task merges the ranks' logs, in time order, into one ``trial.log``.
Ray Train makes ``print`` write each line twice (to the stream, and through
its logger to stderr); for the trial's duration ``print`` is the plain one again.
"""

from __future__ import annotations

import builtins
import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from hpsearch.errors import one_line
from hpsearch.executors._base import Failure, TrialJob, TrialOutcome, attach_log, run_captured
from hpsearch.executors._output import LOG_NAME, SHIP_EVERY_S, process_output
from hpsearch.executors._ray_hub import HubChannel, HubLogSink

__all__ = ["run_data_parallel"]


class _SilentChannel:
    """Ranks other than 0 never report; their decisions come by broadcast."""

    def report(self, trial_number: int, step: int, value: float) -> None:
        return None

    def decision(self, trial_number: int, step: int) -> bool:
        return False


def _worker_loop(config: dict[str, Any]) -> None:
    import ray
    import ray.train

    job: TrialJob = config["job"]
    hub = config["hub"]
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    channel = HubChannel(hub) if rank == 0 else _SilentChannel()
    sink = HubLogSink(hub, job.number) if job.log_path else None
    prefix = f"[rank {rank}] ".encode()
    with _plain_print():
        outcome = run_captured(
            job, channel, process_output, prefix=prefix, sink=sink, ship_every=SHIP_EVERY_S, keep_tail=True
        )
    if sink is not None:
        sink.wait()
    # What this rank actually trained with (each rank unpickles its own copy).
    outcome.placement.update({"rank": rank, "world_size": ctx.get_world_size(), "params": dict(job.params)})
    if rank != 0:
        outcome.artifacts = {}
    outcome.artifacts.pop(LOG_NAME, None)  # the coordinator merges the ranks' logs (outcome.log)
    ray.get(hub.put_outcome.remote(job.number, rank, outcome))
    if outcome.failure is not None:
        # Fail the whole group so that no other rank waits in a collective.
        raise RuntimeError(f"rank {rank}: {outcome.failure.reason}")


@contextlib.contextmanager
def _plain_print() -> Iterator[None]:
    """Undo Ray Train's ``print`` patch while the block runs (it keeps the original in its module's globals)."""
    patched = builtins.print
    original = getattr(patched, "__globals__", {}).get("_original_print")
    if original is None:  # not patched (or patched some other way): leave it
        yield
        return
    builtins.print = original
    try:
        yield
    finally:
        builtins.print = patched


def run_data_parallel(job: TrialJob, hub: Any) -> TrialOutcome:
    """Run ``job`` on ``job.resources.workers`` ranks and return rank 0's outcome."""
    import ray

    storage = tempfile.mkdtemp(prefix=f"hps-train-{job.number}-")
    error: BaseException | None = None
    try:
        _torch_trainer(job, hub, storage).fit()
    except Exception as e:  # noqa: BLE001 - becomes the trial's failure below
        error = e
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    outcomes: dict[int, TrialOutcome] = ray.get(hub.take_outcomes.remote(job.number))
    outcome = _merge(outcomes, error)
    attach_log(outcome, [o.log for _, o in sorted(outcomes.items()) if o.log is not None], job.log_max_bytes)
    outcome.log = None  # merged into trial.log: not shipped twice
    return outcome


def _torch_trainer(job: TrialJob, hub: Any, storage: str) -> Any:
    """A TorchTrainer running :func:`_worker_loop` on the job's ranks (gloo on CPU, NCCL on GPU)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    r = job.resources
    use_gpu = r.gpus > 0
    per_worker: dict[str, float] = {"CPU": r.cpus, **r.custom}
    if use_gpu:
        per_worker["GPU"] = r.gpus
    return TorchTrainer(
        _worker_loop,
        train_loop_config={"job": job, "hub": hub},
        scaling_config=ScalingConfig(num_workers=r.workers, use_gpu=use_gpu, resources_per_worker=per_worker),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(name=f"trial-{job.number}", storage_path=storage),
    )


def _merge(outcomes: dict[int, TrialOutcome], error: BaseException | None) -> TrialOutcome:
    """Rank 0's outcome with a per-rank summary; the first failed rank's failure if any failed."""
    failed = sorted((rank, o) for rank, o in outcomes.items() if o.failure is not None)
    if failed:
        outcome = failed[0][1]
        outcome.failure.reason = f"rank {failed[0][0]}: {outcome.failure.reason}"  # type: ignore[union-attr]
    elif 0 in outcomes and error is None:
        outcome = outcomes[0]
    else:
        detail = one_line(str(error))[:500] if error else "rank 0 returned nothing"
        return TrialOutcome(
            failure=Failure(reason=f"data-parallel job failed: {detail}", type=type(error).__name__ if error else "")
        )
    outcome.user_attrs["ranks"] = [
        {
            "rank": rank,
            "params": o.placement.get("params"),
            "host": o.placement.get("host"),
            "device": o.placement.get("device"),
            **{k: v for k, v in o.user_attrs.items() if k in ("weights_checksum", "params_checksum")},
        }
        for rank, o in sorted(outcomes.items())
    ]
    return outcome
