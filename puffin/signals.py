"""SIGINT (Ctrl-C) is for the main thread: the threads Puffin starts, or has DuckDB start, block it.

The kernel hands a process's SIGINT to any thread that does not block it. Python only notes the
signal there, and the main thread acts on it when it next runs Python code. A query's wait
wakes every 0.1 s, so that is soon; but the shell's prompt waits in readline's ``select()`` on
the terminal with no timeout, and a Ctrl-C taken by one of DuckDB's worker threads (each
database starts a pool when it is opened) showed only at the next key. So databases are opened,
and Puffin's own threads started, with SIGINT blocked in the opening thread: what they start
inherits the block, and the main thread is the one left to take Ctrl-C.
"""

from __future__ import annotations

import contextlib
import signal
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
