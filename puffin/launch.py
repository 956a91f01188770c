"""Starting the runtime off the caller's thread, so that connecting costs nothing.

``puffin.connect()`` calls ``prestart``: one thread imports Ray, starts (or joins) the cluster
and warms a worker per CPU (Python imports, DuckDB opened) while the user's first queries are
planned or answered in-process. The first query that needs Ray calls ``ready``, which waits
for that thread. Ray is imported by ``puffin.runtime`` alone; this module only imports it
lazily.

A local Ray is not started by ``ray.init`` in this process: Ray forks its GCS and raylet with
a Python ``preexec_fn``, which is unsafe while other threads run, and with the user's first
query planning and running DuckDB beside it the forked child crashed (SIGSEGV before exec; the
driver then waited 30 s for a GCS that never came). Instead a clean, single-threaded helper
process (``python -m puffin.launch``) starts the head and prints its address, and this process
joins it as a driver. The helper and Ray's processes die with this process: the helper asks
for ``PR_SET_PDEATHSIG``, which Linux fires when the *thread* that created it ends, so the
starter thread parks for the life of the process (a daemon holding nothing).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import threading

_lock = threading.Lock()
_done = threading.Event()
_thread: threading.Thread | None = None
_error: BaseException | None = None
_head: subprocess.Popen | None = None
HEAD_START_S = 120  # the longest a local head may take to come up


def _running() -> bool:
    if "ray" not in sys.modules:
        return False
    from puffin import runtime

    return runtime.is_started()


def prestart(address: str | None, num_cpus: int | None) -> None:
    """Start the runtime in the background unless it runs or is starting."""
    global _thread, _error
    with _lock:
        if _thread is not None and not _done.is_set():
            return  # starting
        if _running():
            return
        _done.clear()
        _error = None
        _thread = threading.Thread(target=_start_and_park, args=(address, num_cpus),
                                   name="puffin-runtime-start", daemon=True)
        _thread.start()


def ready(address: str | None, num_cpus: int | None) -> None:
    """Return once the runtime runs (starting it now if nothing has); raise what starting it
    raised."""
    if _running() and (_thread is None or _done.is_set()):
        return  # started by someone else (a cluster job, a test), or by us earlier
    prestart(address, num_cpus)
    _done.wait()
    if _error is not None:
        raise _error


def started_here() -> bool:
    """Whether the runtime runs in this process now (without importing Ray to find out)."""
    return _done.is_set() and _error is None and _running()


def _start_and_park(address: str | None, num_cpus: int | None) -> None:
    global _error
    try:
        # Ray warns that a non-main thread cannot install its SIGTERM handler: expected here
        logging.getLogger("ray._private.worker").addFilter(_NotMainThreadWarning())
        address = address or os.environ.get("RAY_ADDRESS") or _start_head(num_cpus)
        from puffin import runtime, signals

        signals.worker_thread()  # the driver's Ray threads start from here: Ctrl-C stays with main
        runtime.join(address)
    except BaseException as e:  # noqa: BLE001 - handed to the query that waits for it
        _error = e
    finally:
        _done.set()
    if _error is None:
        runtime.warm_workers()
    threading.Event().wait()


def _start_head(num_cpus: int | None) -> str:
    """A local Ray head in a helper process (see the module's docstring); its GCS address."""
    global _head
    cmd = [sys.executable, "-m", "puffin.launch"] + ([f"--num-cpus={num_cpus}"] if num_cpus else [])
    _head = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                             text=True, close_fds=True)
    line = _head.stdout.readline()  # the helper prints its address once the head is up
    if not line:
        code = _head.wait(HEAD_START_S)
        raise RuntimeError(f"the local Ray head did not start (exit status {code})")
    head = json.loads(line)
    if head.get("auth_mode") and "RAY_AUTH_MODE" not in os.environ:
        # Ray turned token auth on for its head (a token exists): join it the same way. Ray
        # reads the mode when its config is first loaded; reload it if Ray is loaded already.
        os.environ["RAY_AUTH_MODE"] = head["auth_mode"]
        if "ray" in sys.modules:
            from puffin import runtime

            runtime.reload_config()
    return head["address"]


def stop_head() -> None:
    """End the local head this process started, if any (Ray's processes go with it)."""
    global _head
    if _head is not None and _head.poll() is None:
        _head.kill()
        _head.wait()
    _head = None


class _NotMainThreadWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "not the main thread" not in record.getMessage()


def _serve_head(num_cpus: int | None) -> None:
    """The helper: bound to its parent's life, start a head, say where, then wait to be killed."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: die with the process that started us
    if os.getppid() == 1:
        return  # the parent is already gone
    from puffin import runtime

    address = runtime.start_head(num_cpus)
    print(json.dumps({"address": address, "auth_mode": os.environ.get("RAY_AUTH_MODE")}), flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    cpus = next((int(a.split("=", 1)[1]) for a in sys.argv[1:] if a.startswith("--num-cpus=")), None)
    _serve_head(cpus)
