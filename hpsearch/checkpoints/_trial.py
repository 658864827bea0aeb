"""A running trial's side of checkpointing: save its state, load the one it resumes from."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from hpsearch.checkpoints import _safe as safe
from hpsearch.checkpoints._store import CheckpointRef, CheckpointStore
from hpsearch.errors import one_line

__all__ = ["TrialCheckpoints"]

log = logging.getLogger("hpsearch.checkpoints")


class TrialCheckpoints:
    """Saves trial ``trial``'s checkpoints into ``store`` and loads ``resume`` (None: a fresh start).

    Args:
        store: The study's checkpoint store.
        trial: The running trial's number (its checkpoints go under its own folder).
        params: The trial's params, stored with each checkpoint and checked on load.
        resume: The checkpoint this trial continues from (another trial's, usually).
        same_params: Refuse to load a checkpoint written with other params (PBT turns it off).
    """

    def __init__(
        self,
        store: CheckpointStore,
        trial: int,
        params: dict[str, Any],
        resume: CheckpointRef | None,
        *,
        same_params: bool = True,
    ) -> None:
        self.store = store
        self.trial = trial
        self.params = params
        self.resume = resume
        self.same_params = same_params
        #: Why the resume checkpoint could not be loaded (the trial then started fresh).
        self.error: str | None = None
        #: The step of the checkpoint loaded, once :meth:`load` succeeded.
        self.loaded_step: int | None = None
        self.saved: CheckpointRef | None = None

    def save(self, obj_or_dir: Any, step: int, *, reports: dict[int, float] | None = None) -> CheckpointRef | None:
        """Store a folder's files, or plain data (see :mod:`hpsearch.checkpoints._safe`), at ``step`` (rank 0 only).

        ``reports`` (step -> value, the trial's intermediate values so far) are kept in the
        checkpoint's marker: a re-run carries them over, even those the driver never stored.
        """
        if _rank() != 0:
            return None
        meta: dict[str, Any] = {"params": _jsonable(self.params)}
        if reports:
            meta["reports"] = {str(k): v for k, v in reports.items() if k <= step}
        if isinstance(obj_or_dir, (str, os.PathLike)) and Path(obj_or_dir).is_dir():
            self.saved = self.store.save_dir(self.trial, step, Path(obj_or_dir), {**meta, "kind": "dir"})
            return self.saved
        with tempfile.TemporaryDirectory(prefix="hps-ckpt-save-") as d:
            safe.dump(obj_or_dir, Path(d))  # TypeError for what cannot be stored without pickle
            self.saved = self.store.save_dir(self.trial, step, Path(d), {**meta, "kind": "data"})
        return self.saved

    def load(self) -> Any:
        """The resumed checkpoint: the data saved, or a local folder (read it, do not change it).

        None on a fresh start, or when the checkpoint cannot be loaded: the reason is
        logged once and kept in :attr:`error`, and the trial starts from scratch.
        """
        if self.resume is None or self.error is not None:
            return None
        try:
            meta = self.store.meta(self.resume)
            if self.same_params and meta.get("params") != _jsonable(self.params):
                raise ValueError(f"it was written with other params ({meta.get('params')})")
            folder = self.store.fetch(self.resume)
            value = safe.load(folder) if meta.get("kind") == "data" else folder
        except Exception as e:  # noqa: BLE001 - a bad checkpoint means a fresh start, never a crash
            self.error = one_line(f"trial {self.resume.trial} step {self.resume.step}: {type(e).__name__}: {e}")[:500]
            log.warning("checkpoint not loaded, the trial starts fresh: %s", self.error)
            return None
        self.loaded_step = self.resume.step
        return value


def _rank() -> int:
    """This process's torch.distributed rank (0 when not distributed), without importing torch."""
    import sys

    if "torch.distributed" not in sys.modules:
        return 0
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    """Params as they read back from JSON (tuples as lists), so a check compares like with like."""
    import json

    return dict(json.loads(json.dumps(params, default=str)))
