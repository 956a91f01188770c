"""Ctrl-C that stops a query run in this process, promptly.

A query that ``Connection.sql`` runs inline (one DuckDB task in this process, which is every
query over local files on one machine) stops on SIGINT only when DuckDB's loop in the main thread
gets round to checking for signals, and with several DuckDB threads that thread can sit in one
long task for the whole query (seen: a 3e9-row aggregate ignored Ctrl-C to the end, minutes).
So while a statement runs, the C-level signal handler also writes to a wakeup pipe
(``signal.set_wakeup_fd``), and a watcher thread reading it interrupts the DuckDB cursors the
query opened (``cursor.interrupt()`` works from any thread). The cursors are seen by wrapping
``puffin.operators.fragment.cursor`` in this process: an internal of the library, so when it is
missing the watcher does nothing and Ctrl-C is as prompt as DuckDB makes it. Queries on Ray are
unaffected: their driver loop wakes every 0.1 s and cancels the tasks itself.

Raises KeyboardInterrupt for a cancelled query also where DuckDB reported the interrupt as a
failure ("Query interrupted"), which would otherwise read as the query's error.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading

_lock = threading.Lock()
_open: list | None = None  # cursors opened while a statement runs (None: not watching)
_wrapped = False


def _track_cursors() -> None:
    global _wrapped
    if _wrapped:
        return
    _wrapped = True
    try:
        from puffin.operators import fragment
    except ImportError:
        return
    original = getattr(fragment, "cursor", None)
    if original is None:
        return

    def cursor():
        cur = original()
        with _lock:
            if _open is not None:
                _open.append(cur)
        return cur

    cursor.__doc__ = original.__doc__
    fragment.cursor = cursor


def _interrupt_open() -> None:
    with _lock:
        cursors = list(_open or ())
    for cur in cursors:
        with contextlib.suppress(Exception):  # closed already: nothing to stop
            cur.interrupt()


@contextlib.contextmanager
def cancellable():
    """``with cancellable(): con.sql(...)`` in the main thread (elsewhere it only passes through)."""
    global _open
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _track_cursors()
    interrupted = threading.Event()

    def on_sigint(signum, frame):
        interrupted.set()
        signal.default_int_handler(signum, frame)

    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    stop_r, stop_w = os.pipe()
    previous_handler = signal.signal(signal.SIGINT, on_sigint)
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)

    def watch():
        while True:
            ready, _, _ = select.select([read_fd, stop_r], [], [])
            if stop_r in ready:
                return
            data = os.read(read_fd, 64)
            if signal.SIGINT in data:
                interrupted.set()
                _interrupt_open()

    with _lock:
        _open = []
    watcher = threading.Thread(target=watch, name="puffin-cli-sigint", daemon=True)
    watcher.start()
    try:
        yield
    except Exception:
        if interrupted.is_set():
            raise KeyboardInterrupt from None
        raise
    finally:
        signal.set_wakeup_fd(previous_fd)
        signal.signal(signal.SIGINT, previous_handler)
        os.write(stop_w, b"x")
        watcher.join()
        with _lock:
            _open = None
        for fd in (read_fd, write_fd, stop_r, stop_w):
            os.close(fd)
