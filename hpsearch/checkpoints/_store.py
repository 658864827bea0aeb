"""Where trials' checkpoints live: a local folder, or any URI pyarrow's filesystem layer opens.

Layout under the root, one folder per study and trial::

    ROOT/STUDY/trial-00012/step-000000004/   the files of trial 12's checkpoint at step 4
    ROOT/STUDY/trial-00012/step-000000004/hpsearch-checkpoint.json   written last
    ROOT/STUDY/cache/                        caches that outlive trials (local roots only)

A checkpoint counts only once its marker file exists, so a kill during a write
leaves the previous one usable: on a local path the folder is written under a
temporary name and renamed into place (atomic); on an object store the marker
is written after every other file. Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["MARKER", "CheckpointRef", "CheckpointStore"]

#: The file that makes a step folder a checkpoint; written last.
MARKER = "hpsearch-checkpoint.json"
_STEP = re.compile(r"^step-(\d+)$")
_TRIAL = re.compile(r"^trial-(\d+)$")


@dataclass(frozen=True)
class CheckpointRef:
    """One finished checkpoint: the trial that wrote it and its step."""

    trial: int
    step: int


class CheckpointStore:
    """Checkpoints of one study under ``root`` (a path, or a ``scheme://`` URI such as ``s3://bucket/dir``).

    Picklable: it travels with each job to the worker that runs the trial.
    """

    def __init__(self, root: str, study: str, *, keep: int = 1) -> None:
        self.root = root
        self.study = study
        self.keep = max(1, keep)
        self.local = "://" not in root

    # -- paths ---------------------------------------------------------------------
    def _base(self) -> str:
        return f"{self.root.rstrip('/')}/{self.study}"

    def trial_dir(self, trial: int) -> str:
        return f"{self._base()}/trial-{trial:05d}"

    def step_dir(self, ref: CheckpointRef) -> str:
        return f"{self.trial_dir(ref.trial)}/step-{ref.step:09d}"

    @property
    def cache_dir(self) -> Path | None:
        """A local folder for caches that outlive trials; None for a remote root."""
        return Path(self._base()) / "cache" if self.local else None

    # -- writing -------------------------------------------------------------------
    def save_dir(self, trial: int, step: int, src: Path, meta: dict[str, Any]) -> CheckpointRef:
        """Store the files under ``src`` as trial ``trial``'s checkpoint at ``step``; drop old ones past ``keep``."""
        ref = CheckpointRef(trial, int(step))
        marker = json.dumps({"trial": trial, "step": ref.step, "time": time.time(), **meta})
        if self.local:
            self._save_local(ref, src, marker)
        else:
            self._save_remote(ref, src, marker)
        self._prune(trial)
        return ref

    def _save_local(self, ref: CheckpointRef, src: Path, marker: str) -> None:
        final = Path(self.step_dir(ref))
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
        shutil.copytree(src, tmp)
        (tmp / MARKER).write_text(marker)
        if final.exists():  # the same step written again (a retried save): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)

    def _save_remote(self, ref: CheckpointRef, src: Path, marker: str) -> None:
        fs, base = _filesystem(self.step_dir(ref))
        fs.create_dir(base, recursive=True)
        for path in sorted(p for p in src.rglob("*") if p.is_file()):
            dest = f"{base}/{path.relative_to(src).as_posix()}"
            fs.create_dir(dest.rsplit("/", 1)[0], recursive=True)
            with path.open("rb") as fin, fs.open_output_stream(dest) as fout:
                shutil.copyfileobj(fin, fout)
        with fs.open_output_stream(f"{base}/{MARKER}") as fout:
            fout.write(marker.encode())

    def _prune(self, trial: int) -> None:
        """Delete all but the newest ``keep`` checkpoints of ``trial``, and unfinished writes."""
        steps = self.steps(trial)
        for step in steps[: -self.keep]:
            self._delete(self.step_dir(CheckpointRef(trial, step)))
        if self.local:
            parent = Path(self.trial_dir(trial))
            for tmp in parent.glob(".tmp-*") if parent.is_dir() else []:
                shutil.rmtree(tmp, ignore_errors=True)

    def delete_trial(self, trial: int) -> None:
        """Remove every checkpoint of ``trial`` (nothing if it has none)."""
        self._delete(self.trial_dir(trial))

    def _delete(self, path: str) -> None:
        if self.local:
            shutil.rmtree(path, ignore_errors=True)
            return
        fs, base = _filesystem(path)
        from pyarrow.fs import FileType

        if fs.get_file_info(base).type != FileType.NotFound:
            fs.delete_dir(base)

    # -- reading -------------------------------------------------------------------
    def steps(self, trial: int) -> list[int]:
        """Steps of ``trial``'s finished checkpoints, oldest first."""
        names = self._children(self.trial_dir(trial))
        found = []
        for name in names:
            m = _STEP.match(name)
            if m and self._exists(f"{self.trial_dir(trial)}/{name}/{MARKER}"):
                found.append(int(m.group(1)))
        return sorted(found)

    def latest(self, trial: int) -> CheckpointRef | None:
        """Trial ``trial``'s newest finished checkpoint, if any."""
        steps = self.steps(trial)
        return CheckpointRef(trial, steps[-1]) if steps else None

    def trials(self) -> list[int]:
        """Trials that have a checkpoint folder (finished checkpoints or not)."""
        return sorted(int(m.group(1)) for n in self._children(self._base()) if (m := _TRIAL.match(n)))

    def meta(self, ref: CheckpointRef) -> dict[str, Any]:
        """The marker of ``ref`` (trial, step, time and what the writer added)."""
        return dict(json.loads(self._read(f"{self.step_dir(ref)}/{MARKER}")))

    def fetch(self, ref: CheckpointRef, dest: Path | None = None) -> Path:
        """A local folder holding ``ref``'s files (the folder itself on a local root, else a copy)."""
        src = self.step_dir(ref)
        if self.local:
            if not Path(src, MARKER).is_file():
                raise FileNotFoundError(f"no checkpoint at {src}")
            return Path(src)
        out = dest or Path(tempfile.mkdtemp(prefix="hps-ckpt-"))
        fs, base = _filesystem(src)
        from pyarrow.fs import FileSelector, FileType

        for info in fs.get_file_info(FileSelector(base, recursive=True)):
            if info.type == FileType.File:
                target = out / info.path[len(base) :].lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                with fs.open_input_stream(info.path) as fin, target.open("wb") as fout:
                    shutil.copyfileobj(fin, fout)
        return out

    def _children(self, path: str) -> list[str]:
        if self.local:
            return os.listdir(path) if os.path.isdir(path) else []
        fs, base = _filesystem(path)
        from pyarrow.fs import FileSelector

        infos = fs.get_file_info(FileSelector(base, allow_not_found=True))
        return [info.base_name for info in infos]

    def _exists(self, path: str) -> bool:
        if self.local:
            return os.path.isfile(path)
        fs, base = _filesystem(path)
        from pyarrow.fs import FileType

        return bool(fs.get_file_info(base).type == FileType.File)

    def _read(self, path: str) -> str:
        if self.local:
            return Path(path).read_text()
        fs, base = _filesystem(path)
        with fs.open_input_stream(base) as fin:
            return bytes(fin.read()).decode()


def _filesystem(uri: str) -> tuple[Any, str]:
    """pyarrow's filesystem for ``uri`` and the path within it."""
    try:
        from pyarrow import fs
    except ImportError:
        raise RuntimeError(f"checkpoints at {uri} need pyarrow (pip install pyarrow)") from None
    return fs.FileSystem.from_uri(uri)
