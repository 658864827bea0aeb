"""Start Ray on a background thread, so that it starts while the driver opens its storage.

Ray's head processes are started with ``PR_SET_PDEATHSIG``, which Linux ties to
the *thread* that started them: they die when that thread ends. So the thread
that calls ``ray.init`` here stays alive, parked, until :meth:`BackgroundStart.end`,
which the executor calls after ``ray.shutdown()``.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["BackgroundStart", "exit_on_sigterm"]


class _DropMessage(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self._text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self._text not in record.getMessage()


class BackgroundStart:
    """Run ``target`` on a thread that lives until :meth:`end`; :meth:`wait` re-raises its error."""

    def __init__(self, target: Callable[[], None]) -> None:
        self._target = target
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def begin(self) -> None:
        """Start the thread (returns at once)."""
        self._thread = threading.Thread(target=self._main, name="hpsearch-ray-start", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        # ray.init off the main thread warns that it sets no SIGTERM handler:
        # exit_on_sigterm (main thread) sets the same one.
        quiet = _DropMessage("SIGTERM handler is not set")
        ray_logger = logging.getLogger("ray._private.worker")
        ray_logger.addFilter(quiet)
        try:
            self._target()
        except BaseException as e:  # noqa: BLE001 - handed to the caller of wait()
            self._error = e
        finally:
            ray_logger.removeFilter(quiet)
            self._ready.set()
        self._stop.wait()

    def done(self) -> bool:
        """Whether ``target`` has returned (or raised): :meth:`wait` will not block."""
        return self._ready.is_set()

    def wait(self) -> None:
        """Block until ``target`` has returned; raise what it raised."""
        self._ready.wait()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def end(self) -> None:
        """Let the thread end (after its Ray is shut down) and join it."""
        self._ready.wait()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def exit_on_sigterm() -> Any:
    """What ``ray.init`` does on the main thread: SIGTERM exits (so atexit stops Ray).

    Returns the previous handler, for ``signal.signal(SIGTERM, previous)``; None
    when not on the main thread (nothing changed).
    """
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: FrameType | None) -> None:
        sys.exit(signum)

    return signal.signal(signal.SIGTERM, handler)
