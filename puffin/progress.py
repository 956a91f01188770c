"""How far a running query is: stages and tasks done, rows and bytes scanned, time so far.

The runtime (and the in-process runner) call a query's progress callback with a ``Progress``
each time they wake (about ten times a second) and once at the end. ``Bar`` is the callback
people see: after ``DELAY_S`` (quick queries print nothing) it draws one transient line on
stderr with rich, erased when the query ends::

    ⠹ Running query  stage 2/3 · 7/12 tasks · 1.2M rows, 48.3 MB scanned  3.4s  (Ctrl-C cancels)

``Connection.sql(progress=...)`` takes True/False, a callable, or None (the default: shown when
stderr is a terminal or the session is a notebook; ``PUFFIN_PROGRESS=0``/``1`` overrides).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

DELAY_S = 1.0
ENV, DELAY_ENV = "PUFFIN_PROGRESS", "PUFFIN_PROGRESS_DELAY"


@dataclass(frozen=True)
class Progress:
    stages: int
    stages_done: int
    tasks: int
    tasks_done: int
    rows: int  # rows read by the scan tasks done so far
    bytes: int  # and their bytes
    elapsed: float
    done: bool = False

    def describe(self) -> str:
        parts = [f"stage {min(self.stages_done + 1, self.stages)}/{self.stages}" if self.stages > 1 else "",
                 f"{self.tasks_done}/{self.tasks} tasks" if self.tasks > 1 else ""]
        if self.rows or self.bytes:
            parts.append(f"{_count(self.rows)} rows, {_bytes(self.bytes)} scanned")
        return " · ".join(p for p in parts if p)


def _count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _bytes(n: int) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def delay() -> float:
    try:
        return max(0.0, float(os.environ.get(DELAY_ENV, DELAY_S)))
    except ValueError:
        return DELAY_S


def wanted(flag: bool | None) -> tuple[bool, bool]:
    """(show it, force a terminal) from an explicit flag, else ``PUFFIN_PROGRESS``, else whether
    stderr is a terminal or this is a notebook."""
    if flag is None:
        env = os.environ.get(ENV, "").strip().lower()
        if env in ("1", "true", "yes", "on"):
            flag = True
        elif env in ("0", "false", "no", "off"):
            flag = False
    if flag is None:
        return sys.stderr.isatty() or _notebook(), False
    return flag, flag and not sys.stderr.isatty() and not _notebook()


def _notebook() -> bool:
    shell = sys.modules.get("IPython")
    try:
        return shell is not None and type(shell.get_ipython()).__name__ == "ZMQInteractiveShell"
    except Exception:  # noqa: BLE001 - not IPython as we know it
        return False


def callback(progress) -> Callable[[Progress], None] | None:
    """What ``Connection.sql(progress=...)`` asked for, as a callback (None: nothing to report)."""
    if callable(progress):
        return progress
    show, force = wanted(progress)
    return Bar(show, force) if show else None


class Bar:
    """A progress callback that draws itself on stderr once a query has run ``DELAY_S``.

    Used as a context manager around one query (the CLI), or as a plain callback: it starts on
    the first report past the delay and closes itself on the final one."""

    def __init__(self, enabled: bool = True, force_terminal: bool = False, label: str = "Running query",
                 delay_s: float | None = None):
        self.enabled, self.force, self.label = enabled, force_terminal, label
        self.delay = delay() if delay_s is None else delay_s
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._live = None
        self._task = None
        self._closed = False
        self._text = ""
        self._t0 = time.perf_counter()

    def __enter__(self):
        self._t0 = time.perf_counter()
        if self.enabled:  # shown after the delay even if no report comes (one long in-process task)
            self._timer = threading.Timer(self.delay, self._show)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __call__(self, p: Progress) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._text = p.describe()
            if self._live is not None:
                self._live.update(self._task, description=self._description())
        if p.done:
            self.close()
        elif self._live is None and time.perf_counter() - self._t0 >= self.delay:
            self._show()

    def _description(self) -> str:
        return f"{self.label}  [bold]{self._text}[/bold]" if self._text else self.label

    def _show(self) -> None:
        from rich.console import Console
        from rich.progress import Progress as Live
        from rich.progress import ProgressColumn, SpinnerColumn, TextColumn
        from rich.text import Text

        t0 = self._t0
        if threading.current_thread() is not threading.main_thread():  # the delay's timer thread
            from puffin import signals

            signals.worker_thread()  # rich's refresh thread starts from here: Ctrl-C stays with main

        class Elapsed(ProgressColumn):
            def render(self, task) -> Text:
                return Text(f"{time.perf_counter() - t0:.1f}s", style="progress.elapsed")

        with self._lock:
            if self._closed or self._live is not None:
                return
            console = Console(stderr=True, force_terminal=True if self.force else None)
            live = Live(SpinnerColumn(), TextColumn("[progress.description]{task.description}"), Elapsed(),
                        TextColumn("[dim](Ctrl-C cancels)"), console=console, transient=True,
                        refresh_per_second=8, redirect_stdout=False, redirect_stderr=False)
            self._task = live.add_task(self._description(), total=None)
            live.start()
            self._live = live

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
            if self._live is not None:
                self._live.stop()
                self._live = None

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._t0


class Tracker:
    """Counts a query's finished tasks into ``Progress`` reports for a callback."""

    def __init__(self, report: Callable[[Progress], None] | None, stages) -> None:
        self.report = report
        self.t0 = time.perf_counter()
        self.tasks = {st.id: st.tasks for st in stages}
        self.done: dict[int, int] = {}
        self.rows = self.bytes = 0

    def finished(self, metrics) -> None:
        for m in metrics:
            self.done[m.stage_id] = self.done.get(m.stage_id, 0) + 1
            self.rows += m.rows_scanned
            self.bytes += m.bytes_scanned

    def tick(self, final: bool = False) -> None:
        if self.report is None:
            return
        stages_done = sum(1 for s, n in self.tasks.items() if self.done.get(s, 0) >= n)
        self.report(Progress(len(self.tasks), stages_done, sum(self.tasks.values()), sum(self.done.values()),
                             self.rows, self.bytes, time.perf_counter() - self.t0, final))
