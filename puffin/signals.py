"""SIGINT (Ctrl-C) is for the main thread: the threads Puffin starts, or has DuckDB start, block it.

The kernel hands a process's SIGINT to any thread that does not block it. Python only notes the
signal there, and the main thread acts on it when it next runs Python code. A query's wait
wakes every 0.1 s, so that is soon; but the shell's prompt waits in readline's ``select()`` on
the terminal with no timeout, and a Ctrl-C taken by one of DuckDB's worker threads (each
database starts a pool when it is opened) showed only at the next key. So databases are opened,
and Puffin's own threads started, with SIGINT blocked in the opening thread: what they start
inherits the block, and the main thread is the one left to take Ctrl-C.

That is not all: CPython's readline acts on a signal only when its ``select()`` returns EINTR.
A Ctrl-C that lands while readline is handling keys already typed (a paste, or text and Ctrl-C
in one burst), or one a library's thread took, is noted and then waits for the next key.
``PromptWatch`` closes that gap for the shell: while the prompt waits, a SIGINT the main thread
has not acted on within 50 ms is sent to the main thread again, and its ``select()`` returns.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from typing import Any

import duckdb

_CAN = hasattr(signal, "pthread_sigmask")


@contextlib.contextmanager
def sigint_blocked():
    """SIGINT blocked in this thread for the block (threads started inside keep it blocked)."""
    if not _CAN:
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def connect(*args: Any, **kwargs: Any) -> duckdb.DuckDBPyConnection:
    """``duckdb.connect``, its worker threads blind to SIGINT."""
    with sigint_blocked():
        return duckdb.connect(*args, **kwargs)


def worker_thread() -> None:
    """Called first by a thread of Puffin's own: it, and what it starts, never take SIGINT."""
    if _CAN:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


class PromptWatch:
    """Ctrl-C at the shell's prompt is never left waiting for the next key.

    ``signal.set_wakeup_fd`` writes a byte for each SIGINT, whichever thread took it; our
    handler (which then raises KeyboardInterrupt as Python's does) marks those bytes acted on.
    A thread waits on the bytes; one not acted on after ``grace`` seconds while ``at_prompt``
    is set is followed by ``pthread_kill(main, SIGINT)``, which ends readline's ``select()``
    with EINTR. The byte that kill writes is expected and not counted as a new Ctrl-C; the
    signals Python has noted and not yet handled are one flag, so no Ctrl-C is doubled.
    Made and closed on the main thread."""

    def __init__(self, grace: float = 0.05):
        self.grace, self.at_prompt = grace, False
        self._main = threading.main_thread().ident
        self._lock = threading.RLock()  # a second Ctrl-C may run the handler inside the first
        self._echoes = 0  # bytes our own kills will write
        self._unhandled = 0  # SIGINTs seen on the pipe that no handler call has covered
        self._since = 0.0
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self._closed = False
        self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        self._old_fd = signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        self._thread = threading.Thread(target=self._watch, name="puffin-prompt-sigint", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        signal.set_wakeup_fd(self._old_fd)
        signal.signal(signal.SIGINT, self._previous)
        with contextlib.suppress(BlockingIOError):  # a full pipe wakes the thread as well
            os.write(self._w, b"\0")  # wake the thread
        self._thread.join(2)
        os.close(self._r)
        os.close(self._w)

    def _count(self, data: bytes) -> None:  # with the lock held
        n = data.count(signal.SIGINT)
        echoed = min(n, self._echoes)
        self._echoes -= echoed
        if n - echoed and not self._unhandled:
            self._since = time.monotonic()
        self._unhandled += n - echoed

    def _drain(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while data := os.read(self._r, 512):
                self._count(data)

    def _on_sigint(self, signum, frame) -> None:
        with self._lock:  # what the pipe holds now was noted before this call: all covered
            self._drain()
            self._unhandled = 0
        previous = self._previous
        if callable(previous) and previous is not self._on_sigint:
            previous(signum, frame)
        else:
            raise KeyboardInterrupt

    def _watch(self) -> None:
        worker_thread()
        while not self._closed:
            with self._lock:
                due = None  # nothing unhandled: wait for a byte
                if self._unhandled:  # at the prompt: at the end of the grace; else look again later
                    due = max(self._since + self.grace - time.monotonic(), 0.0) if self.at_prompt else self.grace
            select.select([self._r], [], [], due)
            if self._closed:
                return
            with self._lock:
                self._drain()
                if self._unhandled and self.at_prompt and time.monotonic() >= self._since + self.grace:
                    self._echoes += 1
                    self._since = time.monotonic()  # once more after another grace if still not acted on
                    signal.pthread_kill(self._main, signal.SIGINT)
