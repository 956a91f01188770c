"""The harness side of ``benchmarks.worker``: start an engine's worker process, send it
requests with a time limit, sample the memory of its process tree, and kill it cleanly.

Each worker runs in its own session (``start_new_session``), so every process it starts —
Spark's JVM, Ray's raylet and workers, Daft's Ray — can be found by session id, measured,
and killed without touching anything else on the machine.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent


class WorkerError(Exception):
    """The worker died or did not answer in time; it must be restarted."""


class Worker:
    def __init__(
        self,
        label: str,
        engine: str,
        python: Path | str,
        options: dict,
        log_path: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.label = label
        self.engine = engine
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("a")
        self._log.write(f"\n===== start {engine} {time.strftime('%H:%M:%S')} =====\n")
        self._log.flush()
        self.proc = subprocess.Popen(
            [str(python), "-m", "benchmarks.worker", engine, json.dumps(options)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _receive(self, timeout: float) -> dict:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise WorkerError(f"no answer within {timeout:g} s (timeout)") from None
        if line is None:
            self.proc.wait()
            raise WorkerError(
                f"worker exited with code {self.proc.returncode}; log: {self.log_path}\n{self.log_tail()}"
            )
        return json.loads(line)

    def wait_ready(self, timeout: float) -> dict:
        return self._receive(timeout)

    def request(self, payload: dict, timeout: float) -> dict:
        try:
            self.proc.stdin.write(json.dumps(payload) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise WorkerError(f"worker is gone: {exc}\n{self.log_tail()}") from exc
        return self._receive(timeout)

    def log_tail(self, chars: int = 1500) -> str:
        self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def processes(self) -> list[psutil.Process]:
        """The worker and every process in its session (reparented ones included)."""
        procs = []
        for p in psutil.process_iter(["pid"]):
            try:
                if os.getsid(p.pid) == self.proc.pid:
                    procs.append(p)
            except (ProcessLookupError, PermissionError, psutil.Error):
                continue
        return procs

    def close(self, timeout: float = 60) -> None:
        """Ask the worker to shut its engine down, then kill whatever is left."""
        if self.proc.poll() is None:
            try:
                self.request({"op": "close"}, timeout)
                self.proc.wait(timeout=15)
            except (WorkerError, subprocess.TimeoutExpired, OSError):
                pass
        self.kill()

    def kill(self) -> None:
        procs = self.processes()
        for p in procs:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=10)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._log.close()


class MemorySampler:
    """Background sampling of the summed RSS of the active worker's process tree.

    RSS sums count pages shared between processes (Ray's object store, shared libraries)
    once per process, so they overstate a little; they are comparable between runs.
    ``mark(worker, key)`` says what runs now; peaks are kept per worker label and per key.
    """

    def __init__(self, interval: float = 0.2, refresh_every: int = 5) -> None:
        self.interval = interval
        self.refresh_every = refresh_every
        self.peak_by_engine: dict[str, int] = {}
        self.peak_by_key: dict[tuple[str, str], int] = {}
        self._active: tuple[Worker, str] | None = None
        self._procs: list[psutil.Process] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def mark(self, worker: Worker | None, key: str = "") -> None:
        with self._lock:
            self._active = (worker, key) if worker is not None else None
            self._procs = worker.processes() if worker is not None else []
        self.sample()

    def sample(self, refresh: bool = False) -> None:
        with self._lock:
            if self._active is None:
                return
            worker, key = self._active
            if refresh:
                self._procs = worker.processes()
            total = 0
            for p in self._procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    continue
            label = worker.label
            self.peak_by_engine[label] = max(self.peak_by_engine.get(label, 0), total)
            if key:
                k = (label, key)
                self.peak_by_key[k] = max(self.peak_by_key.get(k, 0), total)

    def _loop(self) -> None:
        tick = 0
        while not self._stop.wait(self.interval):
            tick += 1
            self.sample(refresh=tick % self.refresh_every == 0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def wait_until_idle(workers: list[Worker], cores: float = 0.25, window: float = 1.0, timeout: float = 60.0) -> float:
    """Wait until the process trees of ``workers`` together use under ``cores`` CPUs over
    ``window`` seconds (at most ``timeout``): an engine that starts services in the background
    (Puffin's Ray and its daemons, for seconds after connect) must not slow the timed runs
    of the others. Returns the seconds waited."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        before = {}
        for p in (p for w in workers for p in w.processes()):
            try:
                before[p] = sum(p.cpu_times()[:2])
            except psutil.Error:
                continue
        time.sleep(window)
        used = 0.0
        for p, cpu in before.items():
            try:
                used += sum(p.cpu_times()[:2]) - cpu
            except psutil.Error:
                continue
        if used / window < cores:
            break
    return time.perf_counter() - start


def python_for(spec) -> Path | str:
    """The interpreter that runs ``spec``'s worker: its own venv or the harness's."""
    if spec.requirements is None:
        return sys.executable
    from benchmarks.venvs import ensure_venv

    return ensure_venv(spec.name, spec.requirements)
