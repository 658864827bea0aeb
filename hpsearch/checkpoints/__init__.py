"""Checkpoints: the store (a folder or a pyarrow URI) and a running trial's save/load."""

from __future__ import annotations

from hpsearch.checkpoints._safe import STATE_FILE
from hpsearch.checkpoints._store import MARKER, CheckpointRef, CheckpointStore
from hpsearch.checkpoints._trial import TrialCheckpoints

__all__ = ["MARKER", "STATE_FILE", "CheckpointRef", "CheckpointStore", "TrialCheckpoints"]
