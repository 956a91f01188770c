"""One benchmarked configuration (an engine, or Puffin on N nodes) and its worker's life.

``EngineRun`` starts the worker on first use, loads the tables, turns worker crashes and
time-outs into error answers (killing the worker; the next query starts a fresh one), and
closes everything it started.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.engines import EngineSpec
from benchmarks.report import short_error
from benchmarks.workers import MemorySampler, Worker, WorkerError, python_for

STARTUP_TIMEOUT = 300  # seconds to start a worker and register the tables


@dataclass
class Config:
    label: str
    spec: EngineSpec
    data_dir: Path
    options: dict = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    explain: bool = False
    note: str = ""


class EngineRun:
    def __init__(self, config: Config, record: dict, log_dir: Path, timeout: float, sampler: MemorySampler) -> None:
        self.config = config
        self.label = config.label
        self.record = record  # this run's entry in results["runs"], filled as we go
        self.log_dir = log_dir
        self.timeout = timeout
        self.sampler = sampler
        self.worker: Worker | None = None
        self.failed = False
        record.update(
            engine=config.spec.name,
            data=str(config.data_dir),
            note=config.note,
            options=config.options,
            restarts=0,
            log=str(log_dir / f"{self.label}.log"),
            explain=config.explain,
        )

    def tables(self) -> dict[str, str]:
        return {p.name: str(p) for p in sorted(self.config.data_dir.iterdir()) if p.is_dir()}

    def ensure_started(self) -> bool:
        """Start and load the worker if it is not running; False if that is impossible."""
        if self.worker is not None:
            return True
        if self.failed:
            return False
        if "load_s" in self.record:
            self.record["restarts"] += 1
            print(f"      [{self.label}] restarting worker", flush=True)
        try:
            python = python_for(self.config.spec)
            spawned = time.perf_counter()
            self.worker = Worker(
                self.label,
                self.config.spec.name,
                python,
                self.config.options,
                Path(self.record["log"]),
                self.config.env,
            )
            ready = self.worker.wait_ready(max(self.timeout, STARTUP_TIMEOUT))
            if not ready["ok"]:
                raise WorkerError(ready["error"] + "\n" + ready.get("traceback", ""))
            ready_s = time.perf_counter() - spawned
            start = time.perf_counter()
            loaded = self.call(
                {"op": "load", "tables": self.tables()}, "load", timeout=max(self.timeout, STARTUP_TIMEOUT)
            )
            if not loaded["ok"]:
                raise WorkerError(loaded["error"] + "\n" + loaded.get("traceback", ""))
        except Exception as exc:  # noqa: BLE001 - a peer that cannot start is recorded, not fatal
            self.failed = True
            self.record["startup_error"] = str(exc)
            print(f"      [{self.label}] cannot start: {short_error(exc)}", flush=True)
            self.stop(kill=True)
            return False
        # the first start's figures: a restart after a failure says nothing about start-up
        self.record.setdefault("load_s", loaded.get("seconds", time.perf_counter() - start))
        self.record.setdefault("connect_s", ready.get("start_s"))  # import + connect, in the worker
        self.record.setdefault("spawn_s", ready_s)  # process start to connected, seen from here
        self.record["version"] = loaded.get("version")
        return True

    def call(self, payload: dict, key: str, timeout: float | None = None) -> dict:
        """Send one request; a dead or silent worker becomes an error answer."""
        assert self.worker is not None
        self.sampler.mark(self.worker, key)
        try:
            return self.worker.request(payload, timeout or self.timeout)
        except WorkerError as exc:
            self.stop(kill=True)
            return {"ok": False, "error": f"worker failed: {exc}"}
        finally:
            self.sampler.mark(None)

    def stop(self, kill: bool = False) -> None:
        """Close the worker (``kill``: without asking it first) and its Ray temp dir."""
        if self.worker is not None:
            self.worker.kill() if kill else self.worker.close()
            self.worker = None
        ray_tmp = self.config.env.get("RAY_TMPDIR")
        if ray_tmp:
            shutil.rmtree(ray_tmp, ignore_errors=True)
