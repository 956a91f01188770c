"""A spinner with the elapsed time on stderr, for queries that run longer than about a second.

The public API reports nothing while a query runs (stages and tasks done would need hooks in
``puffin/runtime.py``), so this shows that the query is alive and for how long. It appears
after ``DELAY_S`` so that quick queries print nothing, and it is transient: the line is erased
when the query ends. Shown when stderr is a terminal (or when forced on, ``--progress`` /
``PUFFIN_PROGRESS=1``, which the tests use to capture it); ``--no-progress`` or
``PUFFIN_PROGRESS=0`` turn it off. ``PUFFIN_PROGRESS_DELAY`` (seconds) changes the delay.
"""

from __future__ import annotations

import os
import sys
import threading
import time

DELAY_S = 1.0
ENV, DELAY_ENV = "PUFFIN_PROGRESS", "PUFFIN_PROGRESS_DELAY"


def delay() -> float:
    try:
        return max(0.0, float(os.environ.get(DELAY_ENV, DELAY_S)))
    except ValueError:
        return DELAY_S


def wanted(flag: bool | None) -> tuple[bool, bool]:
    """(show it, force a terminal) from the ``--progress/--no-progress`` flag and the environment."""
    if flag is None:
        env = os.environ.get(ENV, "").strip().lower()
        if env in ("1", "true", "yes", "on"):
            flag = True
        elif env in ("0", "false", "no", "off"):
            flag = False
    if flag is None:
        return sys.stderr.isatty(), False
    return flag, flag and not sys.stderr.isatty()


class Spinner:
    """``with Spinner(enabled, force): con.sql(...)``: nothing for ``DELAY_S``, then a spinner."""

    def __init__(self, enabled: bool, force_terminal: bool = False, label: str = "Running query",
                 delay_s: float | None = None):
        self.enabled, self.force, self.label = enabled, force_terminal, label
        self.delay = delay() if delay_s is None else delay_s
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._live = None
        self._done = False
        self._t0 = 0.0

    def __enter__(self):
        self._t0 = time.perf_counter()
        if self.enabled:
            self._timer = threading.Timer(self.delay, self._show)
            self._timer.daemon = True
            self._timer.start()
        return self

    def _show(self) -> None:
        from rich.console import Console
        from rich.progress import Progress, ProgressColumn, SpinnerColumn, TextColumn
        from rich.text import Text

        t0 = self._t0

        class Elapsed(ProgressColumn):
            def render(self, task) -> Text:
                return Text(f"{time.perf_counter() - t0:.1f}s", style="progress.elapsed")

        with self._lock:
            if self._done:
                return
            console = Console(stderr=True, force_terminal=True if self.force else None)
            live = Progress(SpinnerColumn(), TextColumn("[progress.description]{task.description}"), Elapsed(),
                            TextColumn("[dim](Ctrl-C cancels)"), console=console, transient=True,
                            refresh_per_second=8, redirect_stdout=False, redirect_stderr=False)
            live.add_task(self.label, total=None)
            live.start()
            self._live = live

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._done = True
            if self._timer is not None:
                self._timer.cancel()
            if self._live is not None:
                self._live.stop()
                self._live = None

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._t0
