"""Checkpoints of the shared torch loop: what a stopped trial needs to go on as if it never stopped.

At each report (each epoch, or every ``report_every_steps`` steps), once the manager decided
not to prune, the loop writes one folder of ``torch.save`` files and hands it to
``ctx.save_checkpoint``:

* ``model.pt`` (the model's ``state_dict``), ``optimizer.pt``, ``scheduler.pt``;
* ``loop.pt``: the optimizer step reached, the curve and the last evaluation (the final
  metrics come from them), and the run's shape (steps per epoch, epochs, ranks...), which a
  resume must match;
* ``rng-<rank>.pt``, one per rank (gathered to rank 0, which alone writes): Python's
  ``random``, NumPy's global generator, torch's CPU generator (and this rank's CUDA
  device's), the data loader's generator, and the state of the training collate function
  and batch transform (text augmentation's ``random.Random``, image augmentation's
  ``torch.Generator``).

An epoch's shuffle order is a function of the seed and the epoch (:class:`EpochSampler`),
so the position within the data is the step alone: a resume mid-epoch replays the same
order from the next batch. Nothing here imports torch at module level.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "LOOP_FILE",
    "LoopCheckpoints",
    "MODEL_FILE",
    "OPTIMIZER_FILE",
    "RESTORED_ATTR",
    "SCHEDULER_FILE",
    "EpochSampler",
    "Snapshot",
    "all_ranks_agree",
    "gather_to_main",
    "rng_file",
    "rng_state",
    "set_rng_state",
    "write_checkpoint",
]

log = logging.getLogger("hpsearch.checkpoints")

MODEL_FILE = "model.pt"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
LOOP_FILE = "loop.pt"
#: Trial attribute of a run that restored a checkpoint: ``{"step": report step, "optimizer_step": N}``.
RESTORED_ATTR = "restored_checkpoint"
#: Bumped when the files change meaning; a checkpoint of another format is not restored.
FORMAT = 1


def rng_file(rank: int) -> str:
    """The file of rank ``rank``'s random generators."""
    return f"rng-{rank}.pt"


class EpochSampler:
    """This rank's share of a shuffled epoch; the order depends only on ``seed`` and the epoch.

    As ``DistributedSampler`` (padding by repeating the first indices so every rank gets
    as many), and with one rank simply a seeded permutation. ``set_epoch(epoch, skip)``
    starts the epoch after its first ``skip`` indices, without reading them.
    """

    def __init__(self, size: int, *, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.size, self.seed, self.rank, self.world_size = size, seed, rank, world_size
        self.per_rank = math.ceil(size / world_size)
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def __len__(self) -> int:
        return max(0, self.per_rank - self.skip)

    def __iter__(self) -> Iterator[int]:
        import torch

        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        order: list[int] = torch.randperm(self.size, generator=generator).tolist()
        total = self.per_rank * self.world_size
        while order and len(order) < total:
            order += order[: total - len(order)]
        return iter(order[self.rank : total : self.world_size][self.skip :])


# ---------------------------------------------------------------- random generators


def _holder_state(obj: Any) -> Any:
    """The state of a stateful part of the data path (None: it has none we know of)."""
    import torch

    if isinstance(obj, torch.Generator):
        return obj.get_state()
    if callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None)):
        return obj.state_dict()
    rng = getattr(obj, "rng", None)  # e.g. the text collator's augmentation generator
    return rng.getstate() if isinstance(rng, random.Random) else None


def _set_holder_state(obj: Any, state: Any) -> None:
    import torch

    if isinstance(obj, torch.Generator):
        obj.set_state(state)
    elif callable(getattr(obj, "load_state_dict", None)):
        obj.load_state_dict(state)
    else:
        obj.rng.setstate(_tuples(state))


def _tuples(value: Any) -> Any:
    """``random.setstate`` wants tuples; a round trip may have turned them into lists."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def rng_state(holders: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """Every random generator the training consumes, on this process."""
    import numpy as np
    import torch

    kind, key, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, np.asarray(key).tolist(), int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
        "holders": {name: s for name, obj in holders.items() if (s := _holder_state(obj)) is not None},
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: Mapping[str, Any], holders: Mapping[str, Any], device: torch.device) -> None:
    """Put back what :func:`rng_state` returned."""
    import numpy as np
    import torch

    random.setstate(_tuples(state["python"]))
    kind, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(key, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
    for name, value in state["holders"].items():
        # A part this run does not have (e.g. augmentation off after a PBT change) is skipped;
        # one the checkpoint lacks keeps its seeded start.
        if _holder_state(holders.get(name)) is not None:
            _set_holder_state(holders[name], value)


# ---------------------------------------------------------------- ranks


def _backend_device(device: torch.device) -> torch.device:
    import torch
    import torch.distributed as dist

    return device if dist.get_backend() == "nccl" else torch.device("cpu")


def gather_to_main(value: Any, device: torch.device, *, active: bool) -> list[Any]:
    """Every rank's ``value``, in rank order (a collective: every rank calls it)."""
    if not active:
        return [value]
    import contextlib

    import torch
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    # NCCL moves the pickled objects through the current CUDA device: make it this rank's.
    on_device = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with on_device:
        dist.all_gather_object(out, value)
    return out


def all_ranks_agree(flag: bool, device: torch.device, *, active: bool) -> bool:
    """True when ``flag`` holds on every rank (a collective: every rank calls it)."""
    if not active:
        return flag
    import torch
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_backend_device(device))
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


# ---------------------------------------------------------------- files


def write_checkpoint(folder: Path, parts: Mapping[str, Any], rngs: list[dict[str, Any]]) -> None:
    """``parts`` (file name -> object) and each rank's generators into ``folder``."""
    import torch

    for name, value in parts.items():
        torch.save(value, folder / name)
    for rank, state in enumerate(rngs):
        torch.save(state, folder / rng_file(rank))


def save_to_context(ctx: Any, step: int, parts: Mapping[str, Any], rngs: list[dict[str, Any]]) -> None:
    """Write the files into a temporary folder and store it as the trial's checkpoint at ``step``."""
    with tempfile.TemporaryDirectory(prefix="hps-torch-ckpt-") as tmp:
        write_checkpoint(Path(tmp), parts, rngs)
        ctx.save_checkpoint(tmp, step)


@dataclasses.dataclass
class Snapshot:
    """A checkpoint folder read back (on the CPU): one rank's view of it."""

    model: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    loop: dict[str, Any]
    rng: dict[str, Any]

    @staticmethod
    def read(folder: Path, rank: int, shape: Mapping[str, Any]) -> Snapshot:
        """Load the files of ``folder`` (tensors and plain data only: ``weights_only``) for ``rank``.

        Raises:
            ValueError: the checkpoint was not written by a run of this ``shape``.
        """
        import torch

        def load(name: str) -> Any:
            return torch.load(folder / name, map_location="cpu", weights_only=True)

        loop = load(LOOP_FILE)
        _check(loop, shape)
        return Snapshot(
            model=load(MODEL_FILE),
            optimizer=load(OPTIMIZER_FILE),
            scheduler=load(SCHEDULER_FILE),
            loop=loop,
            rng=load(rng_file(rank)),
        )


def _check(loop: Mapping[str, Any], shape: Mapping[str, Any]) -> None:
    if loop.get("format") != FORMAT:
        raise ValueError(f"checkpoint format {loop.get('format')!r}, expected {FORMAT}")
    written = loop.get("shape", {})
    for key, value in shape.items():
        if written.get(key) != value:
            raise ValueError(f"it was written with {key}={written.get(key)!r}, this run has {value!r}")


# ---------------------------------------------------------------- the loop's side


class LoopCheckpoints:
    """Save a training loop's state at each report; restore it (or start fresh) before training.

    ``loop`` is the shared loop (``hpsearch.trainers.torch._loop``): its ``ctx``, ``s``
    (settings), ``dist``, ``device``, ``model``, ``optimizer``, ``scheduler``,
    ``rng_holders``, ``steps_per_epoch``, ``step``, ``reported_step``, ``curve`` and
    ``last_eval``, and ``build_optimizer()``. Without a checkpoint store (``ctx.checkpoints``
    None) it does nothing, on every rank alike.
    """

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self.enabled = loop.ctx.checkpoints is not None
        #: The report step of the checkpoint restored (None: a fresh start).
        self.report_step: int | None = None
        #: Seconds spent saving checkpoints.
        self.seconds = 0.0

    def shape(self) -> dict[str, Any]:
        """What a checkpoint must have been written with to be restored into this run."""
        s = self.loop.s
        return {
            "steps_per_epoch": self.loop.steps_per_epoch,
            "world_size": self.loop.dist.world_size,
            "epochs": s.epochs,
            "batch_size": s.batch_size,
            "report_every_steps": s.report_every_steps,
            "seed": s.seed,
        }

    def save(self, report_step: int) -> None:
        """Checkpoint the loop after the report at ``report_step`` (every rank calls it; rank 0 writes)."""
        if not self.enabled:
            return
        t0 = time.perf_counter()
        self._save(report_step)
        self.seconds += time.perf_counter() - t0

    def _save(self, report_step: int) -> None:
        loop = self.loop
        rngs = gather_to_main(rng_state(loop.rng_holders, loop.device), loop.device, active=loop.dist.active)
        if not loop.dist.is_main:
            return
        last = loop.last_eval
        state = {
            "format": FORMAT,
            "shape": self.shape(),
            "step": loop.step,
            "report_step": report_step,
            "curve": loop.curve,
            "last_eval": None if last is None else dataclasses.asdict(last),
        }
        parts = {
            MODEL_FILE: loop.model.state_dict(),
            OPTIMIZER_FILE: loop.optimizer.state_dict(),
            SCHEDULER_FILE: loop.scheduler.state_dict(),
            LOOP_FILE: state,
        }
        save_to_context(loop.ctx, report_step, parts, rngs)

    def resume(self) -> None:
        """Restore the checkpoint ``ctx.load_checkpoint()`` returns, on every rank, or start fresh.

        A checkpoint that does not restore (another model's shapes, another run's shape, a
        missing file) leaves the loop as it was built and sets ``checkpoint_error``; under
        DDP the ranks agree, so either all of them resume or all start fresh.
        """
        if not self.enabled:
            return
        loop = self.loop
        folder = loop.ctx.load_checkpoint()
        restored, fresh = False, None
        if folder is not None:
            fresh = _Fresh.capture(loop)
            restored = self._try_restore(folder)
        agreed = all_ranks_agree(restored, loop.device, active=loop.dist.active)
        if restored and not agreed:
            self._fail("another rank could not restore it")
        if fresh is not None and not agreed:
            fresh.put_back(loop)
            self.report_step = None
        elif agreed:
            loop.ctx.set_user_attr("curve", loop.curve)
            loop.ctx.set_user_attr("epochs_run", round(loop.step / loop.steps_per_epoch, 4))
            loop.ctx.set_user_attr(RESTORED_ATTR, {"step": self.report_step, "optimizer_step": loop.step})

    def _try_restore(self, folder: Any) -> bool:
        try:
            if not isinstance(folder, (str, os.PathLike)):
                raise TypeError(f"a {type(folder).__name__} object, not a torch trainer's checkpoint folder")
            self._restore(Snapshot.read(Path(folder), self.loop.dist.rank, self.shape()))
        except Exception as e:  # noqa: BLE001 - a checkpoint that does not fit means a fresh start
            self._fail(f"{type(e).__name__}: {e}")
            return False
        return True

    def _restore(self, snap: Snapshot) -> None:
        from hpsearch.trainers.torch._eval import EvalResult

        loop = self.loop
        loop.model.load_state_dict(snap.model)
        _load_optimizer(loop.optimizer, loop.scheduler, snap)
        set_rng_state(snap.rng, loop.rng_holders, loop.device)
        loop.step = loop.reported_step = int(snap.loop["step"])
        self.report_step = int(snap.loop["report_step"])
        loop.curve = list(snap.loop["curve"])
        last = snap.loop["last_eval"]
        loop.last_eval = None if last is None else EvalResult(**last)

    def _fail(self, why: str) -> None:
        """Record why the checkpoint was not restored (the trial starts fresh)."""
        from hpsearch.errors import one_line

        resume = getattr(self.loop.ctx.checkpoints, "resume", None)
        where = f"trial {resume.trial} step {resume.step}: " if resume is not None else ""
        message = one_line(f"{where}not restored, the trial starts fresh: {why}")[:500]
        log.warning("%s", message)
        self.loop.ctx.set_user_attr("checkpoint_error", message)


def _load_optimizer(optimizer: Any, scheduler: Any, snap: Snapshot) -> None:
    """The optimizer's state and the schedule's position from ``snap``, this run's hyperparameters.

    The moments and the step count come from the checkpoint; the peak learning rate,
    weight decay, momentum... stay this run's (they differ when a PBT segment continues
    another member's checkpoint with changed params). The learning rate is recomputed
    as the schedule does: ``base_lr * factor(step)``, the same float as an unbroken run's.
    """
    settings = [{k: v for k, v in g.items() if k not in ("params", "lr", "initial_lr")} for g in optimizer.param_groups]
    base_lrs = list(scheduler.base_lrs)
    optimizer.load_state_dict(snap.optimizer)
    scheduler.load_state_dict(snap.scheduler)
    scheduler.base_lrs = base_lrs
    for group, own, base, factor in zip(optimizer.param_groups, settings, base_lrs, scheduler.lr_lambdas, strict=True):
        group.update(own)
        group["initial_lr"] = base
        group["lr"] = base * factor(scheduler.last_epoch)


@dataclasses.dataclass
class _Fresh:
    """The freshly built loop's weights and generators, to go back to when a restore fails."""

    model: dict[str, Any]
    rng: dict[str, Any]

    @staticmethod
    def capture(loop: Any) -> _Fresh:
        weights = {k: v.detach().to("cpu", copy=True) for k, v in loop.model.state_dict().items()}
        return _Fresh(model=weights, rng=rng_state(loop.rng_holders, loop.device))

    def put_back(self, loop: Any) -> None:
        """The loop exactly as built: weights, a new optimizer and schedule, generators, step 0."""
        loop.model.load_state_dict(self.model)
        loop.build_optimizer()
        set_rng_state(self.rng, loop.rng_holders, loop.device)
        loop.step = loop.reported_step = 0
        loop.curve, loop.last_eval = [], None
