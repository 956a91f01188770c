"""Plans of one task, run in the calling process (embedded mode).

A plan of one stage and one task (a query over small inputs, or any query over local data on a
one-node cluster) runs here through the same pure ``run_fragment`` a Ray task runs: no task
round trip, no result copied through Ray's object store, no wait for Ray to start. With Lambda
offload on, the one fragment may be invoked on Lambda from here instead.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import pyarrow as pa

from puffin import signals
from puffin.errors import PuffinError
from puffin.progress import Tracker

INLINE_POLL_S = 0.1  # a query run in-process is watched this often for Ctrl-C and its timeout
INTERRUPT_SETTLE_S = 10.0  # the longest wait for an interrupted in-process query to stop


def runs_inline(planned) -> bool:
    """One stage of one task: run here, on this machine's cores, rather than on a Ray worker of
    the same machine (no task round trip, no result copied through the object store)."""
    stages = planned.plan.stages
    return len(stages) == 1 and stages[0].tasks == 1


def run_inline(planned, timeout: float | None = None, progress=None) -> tuple[pa.Table, list]:
    """The plan's one fragment, run in this process (the same pure ``run_fragment``).

    DuckDB runs it on a thread of its own while the caller waits in short slices, so Ctrl-C
    (delivered to the waiting thread; DuckDB in native code would not see it for as long as a
    long task runs) and ``timeout`` interrupt the fragment's cursor at once: KeyboardInterrupt
    goes on up, a timeout raises ``QueryCancelled``, as on Ray."""
    from puffin.errors import ExecutionError, QueryCancelled
    from puffin.operators.fragment import error_text, run_fragment

    frag = planned.fragments[planned.plan.stages[0].id][0]
    tables = {src.source_id: src.table for src in planned.used.values() if src.kind == "arrow"}
    box: dict[str, Any] = {}
    cursors: list = []
    stop = threading.Event()

    def opened(cur) -> None:
        cursors.append(cur)
        if stop.is_set():
            cur.interrupt()

    def work() -> None:
        signals.worker_thread()  # Ctrl-C stays with the waiting main thread (DuckDB's threads too)
        try:
            box["value"] = run_fragment(frag, {}, tables, opened)
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            box["error"] = e

    def interrupt() -> None:
        stop.set()
        for cur in cursors:
            with contextlib.suppress(Exception):  # closed already: nothing to stop
                cur.interrupt()
        worker.join(INTERRUPT_SETTLE_S)

    if timeout is not None and timeout <= 0:
        raise PuffinError(f"timeout must be a positive number of seconds, not {timeout!r}")
    deadline = None if timeout is None else time.monotonic() + timeout
    worker = threading.Thread(target=work, name="puffin-inline", daemon=True)
    tracker = Tracker(progress, planned.plan.stages)
    worker.start()
    try:
        while worker.is_alive():
            tracker.tick()
            worker.join(INLINE_POLL_S if deadline is None else max(0.0, min(INLINE_POLL_S, deadline - time.monotonic())))
            if deadline is not None and worker.is_alive() and time.monotonic() >= deadline:
                interrupt()
                raise QueryCancelled(f"the query ran past its timeout of {timeout:g} s and was cancelled")
    except KeyboardInterrupt:
        interrupt()
        raise
    if "error" in box:
        e = box["error"]
        if isinstance(e, PuffinError):
            raise e
        raise ExecutionError(f"stage {frag.stage_id} task {frag.task} failed: {error_text(e)}",
                             frag.stage_id) from None
    parts, metrics = box["value"]
    tracker.finished([metrics])
    tracker.tick(final=True)
    return parts[0], [metrics]


def run_inline_on_lambda(planned, offload) -> tuple[pa.Table, list]:
    """The plan's one fragment on Lambda, invoked from this thread; where Lambda cannot run it
    (throttled, timed out, misconfigured), in this process as ``run_inline`` would."""
    frag = planned.fragments[planned.plan.stages[0].id][0]
    try:
        try:
            parts, metrics = offload.run(frag)
        except offload.Unavailable as e:
            instead = offload.fell_back(frag, e)
            if instead is not None:
                raise instead from None
        except PuffinError:  # DuckDB rejected the fragment on Lambda: it would here too
            raise
        except Exception as e:  # noqa: BLE001 - a bug of the bridge: run it here
            offload.fell_back(frag, e)
        else:
            return parts[0], [metrics]
    finally:
        offload.finish()
    return run_inline(planned)
