"""A trial's stdout and stderr: captured into a bounded ``trial.log``, and streamed live.

Where a trial runs decides how its output is caught:

* on a thread of the driver (the ``local`` executor, and the ``ray`` executor's
  first trials on the driver): :func:`thread_output` puts a router on
  ``sys.stdout``/``sys.stderr`` while any trial runs. Each write goes to the
  log of the trial whose thread wrote it (a context variable), and on to the
  terminal as before. Output written below Python (C libraries writing to
  fd 1/2) cannot be told apart by thread there, so it is not kept.
* in a Ray worker, which runs one trial at a time: :func:`process_output` points
  fd 1 and 2 at pipes for the trial's duration, so C-level output is kept too.
  A pump thread copies every byte on to the original descriptors as well, so
  Ray's worker log files, and its forwarding of them to the driver, see what
  they saw before.

A :class:`TrialLog` keeps the last ``max_bytes`` bytes (whole lines, each
prefixed with ``[rank N]`` on a data-parallel trial) with the time each was
written, so that the ranks' logs merge in time order (:func:`render`). It also
hands new lines to a *sink* while the trial runs: a :class:`LiveFile` in the
driver, which ``hpsearch logs --follow`` tails (directly from a driver thread;
through the report hub from a Ray worker). The limit is an environment
variable, not a study key: it bounds memory and disk per trial, an operating
concern of the machine that runs the driver, like Ray's own log settings.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import select
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from hpsearch.errors import ConfigError

__all__ = [
    "LIVE_LOGS_DIR",
    "LOG_MB_ENV",
    "LOG_NAME",
    "LiveFile",
    "LiveLogs",
    "LogTail",
    "TrialLog",
    "live_log_path",
    "log_limit",
    "process_output",
    "render",
    "thread_output",
]

#: Environment variable: megabytes of output kept per trial (its last part); 0 turns capture off.
LOG_MB_ENV = "HPSEARCH_TRIAL_LOG_MB"
DEFAULT_LOG_MB = 4.0
#: The artifact name of a trial's output.
LOG_NAME = "trial.log"
#: Folder under the artifact root where the driver keeps running trials' output.
LIVE_LOGS_DIR = "live-logs"
#: A partial line longer than this is kept without waiting for its newline (a progress bar's ``\r``).
MAX_PARTIAL = 8192
#: How often a Ray worker ships new output to the driver (s).
SHIP_EVERY_S = 0.25
#: How long the end of a trial waits for the pump to drain its pipes (a child process may hold them).
_PUMP_JOIN_S = 2.0


def log_limit() -> int:
    """Bytes of output kept per trial, from :data:`LOG_MB_ENV` (default 4 MB); 0: not captured."""
    raw = os.environ.get(LOG_MB_ENV, "").strip()
    if not raw:
        return int(DEFAULT_LOG_MB * 1024 * 1024)
    try:
        mb = float(raw)
    except ValueError:
        mb = -1.0
    if not mb >= 0 or mb == float("inf"):
        raise ConfigError(f"{LOG_MB_ENV}: expected megabytes >= 0 (0 turns trial logs off), got {raw!r}")
    return int(mb * 1024 * 1024)


def live_log_path(artifacts: str | Path, study: str, number: int) -> Path:
    """Where the driver appends trial ``number``'s output while it runs.

    ``<artifacts>/live-logs/<study>/<number>.log``, the study name URL-quoted.
    """
    return Path(artifacts) / LIVE_LOGS_DIR / quote(study, safe="") / f"{number}.log"


@dataclass
class LogTail:
    """What a :class:`TrialLog` kept: ``(time, lines)`` entries, and how many bytes it dropped first."""

    entries: list[tuple[float, bytes]] = field(default_factory=list)
    dropped: int = 0


class TrialLog:
    """The last ``max_bytes`` bytes of a trial's output, as whole lines; thread-safe.

    Args:
        max_bytes: Bytes kept (older lines are dropped first).
        prefix: Put before every line (``b"[rank 1] "``).
        sink: Called with new whole lines while the trial runs (the live copy); one that
            raises is dropped, with a note in the log.
        ship_every: Hand lines to ``sink`` at most this often (s); 0: at every write.
    """

    def __init__(
        self,
        max_bytes: int,
        *,
        prefix: bytes = b"",
        sink: Callable[[bytes], Any] | None = None,
        ship_every: float = 0.0,
    ) -> None:
        self.max_bytes = max_bytes
        self.prefix = prefix
        self.sink = sink
        self.ship_every = ship_every
        self._lock = threading.Lock()
        self._entries: deque[tuple[float, bytes]] = deque()
        self._size = 0
        self._dropped = 0
        self._partial = b""
        self._pending: list[bytes] = []
        self._shipped_at = 0.0

    def write(self, data: bytes) -> None:
        """Add output; whole lines are kept (and shipped when due), a partial one waits for its end."""
        if not data:
            return
        with self._lock:
            self._add(self._whole_lines(data))
            if self._pending and time.monotonic() - self._shipped_at >= self.ship_every:
                self._ship()

    def flush(self) -> None:
        """Ship what the sink has not had yet."""
        with self._lock:
            self._ship()

    def close(self) -> LogTail:
        """End the log (a last partial line is kept with a newline); ship the rest; return what was kept."""
        with self._lock:
            if self._partial:
                self._add(self._prefixed(self._partial + b"\n"))
                self._partial = b""
            self._ship()
            return LogTail(list(self._entries), self._dropped)

    def _whole_lines(self, data: bytes) -> bytes:
        text = self._partial + data
        cut = text.rfind(b"\n") + 1
        if cut == 0 and len(text) > MAX_PARTIAL:
            text, cut = text + b"\n", len(text) + 1
        self._partial = text[cut:]
        return self._prefixed(text[:cut])

    def _prefixed(self, lines: bytes) -> bytes:
        if not self.prefix or not lines:
            return lines
        return b"".join(self.prefix + line for line in lines.splitlines(keepends=True))

    def _add(self, chunk: bytes) -> None:
        if not chunk:
            return
        self._entries.append((time.time(), chunk))
        self._size += len(chunk)
        if self.sink is not None:
            self._pending.append(chunk)
        while self._size > self.max_bytes:
            stamp, first = self._entries[0]
            # Drop whole lines: the kept part always starts on a line.
            newline = first.find(b"\n", self._size - self.max_bytes - 1)
            cut = newline + 1 if newline >= 0 else len(first)
            if cut >= len(first):
                self._entries.popleft()
            else:
                self._entries[0] = (stamp, first[cut:])
            self._size -= cut
            self._dropped += cut

    def _ship(self) -> None:
        self._shipped_at = time.monotonic()
        if not self._pending or self.sink is None:
            return
        data = b"".join(self._pending)[-self.max_bytes :]
        self._pending.clear()
        try:
            self.sink(data)
        except Exception as e:  # noqa: BLE001 - the live copy is a convenience: the trial goes on
            self.sink = None
            self._add(f"[hpsearch] the live copy of this log stopped: {type(e).__name__}: {e}\n".encode())


def render(tails: Sequence[LogTail], max_bytes: int) -> bytes:
    """One ``trial.log`` from the ranks' tails: lines in time order, at most ``max_bytes``, a truncation note first.

    Empty when nothing was written (no artifact is stored then).
    """
    entries = sorted((e for tail in tails for e in tail.entries), key=lambda e: e[0])
    body = b"".join(chunk for _, chunk in entries)
    dropped = sum(tail.dropped for tail in tails)
    if len(body) > max_bytes:
        cut = len(body) - max_bytes
        newline = body.find(b"\n", cut, cut + MAX_PARTIAL)
        cut = newline + 1 if newline >= 0 else cut
        body, dropped = body[cut:], dropped + cut
    if not dropped:
        return body
    note = (
        f"[hpsearch] output truncated: the first {dropped} bytes were dropped, the last {len(body)} are kept "
        f"(raise {LOG_MB_ENV} to keep more)\n"
    )
    return note.encode() + body


# -- on a driver thread: route sys.stdout/sys.stderr writes by trial ------------------------

_current: contextvars.ContextVar[TrialLog | None] = contextvars.ContextVar("hpsearch_trial_log", default=None)
_router_lock = threading.Lock()
_router_users = 0
_saved_streams: tuple[Any, Any] = (None, None)


class _Router:
    """Stands in for ``sys.stdout``/``sys.stderr``: a write goes to the writing trial's log, then on."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        log = _current.get()
        if log is not None:
            log.write(text.encode("utf-8", "replace"))
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _acquire_router() -> None:
    global _router_users, _saved_streams
    with _router_lock:
        if _router_users == 0:
            _saved_streams = (sys.stdout, sys.stderr)
            if sys.stdout is not None:
                sys.stdout = _Router(sys.stdout)
            if sys.stderr is not None:
                sys.stderr = _Router(sys.stderr)
        _router_users += 1


def _release_router() -> None:
    global _router_users, _saved_streams
    with _router_lock:
        _router_users -= 1
        if _router_users == 0:
            # Put back only our own router: whoever replaced it since keeps theirs.
            if isinstance(sys.stdout, _Router):
                sys.stdout = _saved_streams[0]
            if isinstance(sys.stderr, _Router):
                sys.stderr = _saved_streams[1]
            _saved_streams = (None, None)


@contextlib.contextmanager
def thread_output(log: TrialLog) -> Iterator[None]:
    """While the block runs, what this thread writes to ``sys.stdout``/``sys.stderr`` also goes to ``log``."""
    _acquire_router()
    token = _current.set(log)
    try:
        yield
    finally:
        _current.reset(token)
        _release_router()


# -- in a worker process: fd 1 and 2 through pipes ------------------------------------------


@contextlib.contextmanager
def process_output(log: TrialLog) -> Iterator[None]:
    """While the block runs, everything written to fd 1 and 2 goes to ``log`` and on to where it went before.

    For a process that runs one trial at a time (a Ray worker): other threads' output lands in the log too.
    """
    _flush_std()
    pipes: dict[int, int] = {}  # read end -> the original descriptor (a copy)
    saved: dict[int, int] = {}
    for fd in (1, 2):
        read, write = os.pipe()
        saved[fd] = os.dup(fd)
        os.dup2(write, fd)
        os.close(write)
        pipes[read] = saved[fd]
    buffering = _line_buffered(True)
    pump = _Pump(pipes, log)
    pump.start()
    try:
        yield
    finally:
        _flush_std()
        for fd, original in saved.items():
            os.dup2(original, fd)  # the pipe's last write end closes: the pump sees its end
        pump.join(_PUMP_JOIN_S)
        pump.detached = True  # a child process still holds a pipe: it is copied on, not kept
        _line_buffered(buffering)


class _Pump(threading.Thread):
    """Copies each pipe to its original descriptor and into the log; closes its descriptors at the end."""

    def __init__(self, pipes: dict[int, int], log: TrialLog) -> None:
        super().__init__(name="hpsearch-trial-output", daemon=True)
        self.pipes = pipes
        self.log = log
        self.detached = False

    def run(self) -> None:
        open_ = list(self.pipes)
        try:
            while open_:
                ready, _, _ = select.select(open_, [], [], SHIP_EVERY_S)
                for read in ready:
                    data = os.read(read, 65536)
                    if not data:
                        open_.remove(read)
                        continue
                    _write_all(self.pipes[read], data)  # Ray's log file, forwarded to the driver as before
                    if not self.detached:
                        self.log.write(data)
                if not ready and not self.detached:
                    self.log.flush()  # quiet for a while: ship what is pending
        finally:
            for read, original in self.pipes.items():
                for fd in (read, original):
                    with contextlib.suppress(OSError):
                        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    with contextlib.suppress(OSError):
        while data:
            data = data[os.write(fd, data) :]


def _flush_std() -> None:
    """Flush Python's and C's buffered stdout/stderr into the descriptors."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).fflush(None)


def _line_buffered(on: bool | tuple[bool, bool]) -> tuple[bool, bool]:
    """Set line buffering of ``sys.stdout``/``sys.stderr`` (so output reaches the pipe as it is printed);
    returns what it was."""
    wanted = (on, on) if isinstance(on, bool) else on
    before: list[bool] = []
    for stream, value in zip((sys.stdout, sys.stderr), wanted, strict=True):
        before.append(bool(getattr(stream, "line_buffering", False)))
        with contextlib.suppress(Exception):
            stream.reconfigure(line_buffering=value)  # type: ignore[union-attr]
    return before[0], before[1]


# -- in the driver: the live copy ------------------------------------------------------------


class LiveFile:
    """The driver's copy of a running trial's output, which ``hpsearch logs --follow`` tails.

    At most about ``2 * max_bytes`` on disk: past ``max_bytes`` the file is renamed to
    ``<name>.1`` (a reader with it open reads it to its end) and a new one begins.
    :meth:`close` removes both: by then the trial's ``trial.log`` is on its way to storage.
    """

    def __init__(self, path: str | Path, max_bytes: int) -> None:
        self.path = Path(path)
        self.max_bytes = max(1, max_bytes)
        self._fd: int | None = None
        self._size = 0

    def append(self, data: bytes) -> None:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
            self._size = 0
        _write_all(self._fd, data)
        self._size += len(data)
        if self._size >= self.max_bytes:
            os.close(self._fd)
            self._fd = None
            os.replace(self.path, self.rotated)

    @property
    def rotated(self) -> Path:
        return self.path.with_name(self.path.name + ".1")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        for path in (self.path, self.rotated):
            with contextlib.suppress(OSError):
                path.unlink()


class LiveLogs:
    """The live logs of the running trials of one driver, by trial number."""

    def __init__(self) -> None:
        self._files: dict[int, LiveFile] = {}

    def start(self, number: int, path: str | None, max_bytes: int) -> None:
        """Keep a live log for trial ``number`` at ``path`` (None, or capture off: none)."""
        if path and max_bytes > 0:
            self._files[number] = LiveFile(path, max_bytes)

    def append(self, logs: dict[int, bytes]) -> None:
        """Append each trial's new output to its live log (output of trials without one is dropped)."""
        for number, data in logs.items():
            live = self._files.get(number)
            if live is not None:
                live.append(data)

    def end(self, number: int, last: Callable[[], bytes] | None = None) -> None:
        """Append ``last()`` (the trial's last lines), then remove trial ``number``'s live log."""
        live = self._files.pop(number, None)
        if live is None:
            return
        try:
            if last is not None:
                live.append(last())
        finally:
            live.close()

    def close(self) -> None:
        """Remove every live log (the driver is shutting down)."""
        for live in self._files.values():
            live.close()
        self._files.clear()
