"""``LocalSpark``: Spark SQL jobs on this machine, through one long-lived driver process.

JVM and Spark start-up cost seconds, so the driver (``puffin/spark/driver.py --serve``, run
with this interpreter) starts once, on the first job, and serves every job after it on one
SparkSession: one JSON line in on its stdin, one report line out on its stdout. Its stderr
(Spark's log) is kept in a ring for ``SparkReport.log_tail`` and error details.

Lifetime: the driver runs in its own process session, with the JVM under it, so both are
killed together (``os.killpg``) by ``close()``, at interpreter exit (atexit), when a job runs
past its timeout (``QueryCancelled``; the next job starts a fresh Spark) or is interrupted
(KeyboardInterrupt goes on up). If this process dies without any of that, the driver sees it
is orphaned within a second and exits, and the JVM exits when its stdin (the driver's) closes.
A driver that died is started again by the next job. Jobs run one at a time (a lock).

Scratch space (Spark's local dirs, java.io.tmpdir, results on their way back) lives in one
temporary directory per driver, removed when the driver goes.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from puffin.errors import ExecutionError, PuffinError, QueryCancelled
from puffin.spark.client import SparkClient, SparkJob, SparkReport
from puffin.spark.conf import local_spark_missing, spark_conf
from puffin.spark.settings import SparkSettings
from puffin.storage import S3Config

DRIVER = Path(__file__).with_name("driver.py")
START_TIMEOUT_S = 180.0
# Local Spark runs small jobs (development, tests): the JIT's first tier and the serial GC halve
# the CPU a start and a few statements take (18 s -> 10 s measured). spark.driver.extraJavaOptions
# in SparkSettings.conf replaces them.
LOCAL_JAVA_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
LOG_LINES = 400
LOG_TAIL_LINES = 60
_LIVE: weakref.WeakSet[LocalSpark] = weakref.WeakSet()


class LocalSpark(SparkClient):
    def __init__(self, settings: SparkSettings, catalogs: dict[str, dict], s3: S3Config):
        missing = local_spark_missing(jars=False)
        if missing:
            raise PuffinError(f"local Spark cannot run here: {missing}")
        self.settings = settings
        self.conf = spark_conf(catalogs, s3, settings)  # bad catalogs or missing jars fail here
        self._s3 = s3
        self._run_lock = threading.Lock()  # one job at a time
        self._proc_lock = threading.Lock()  # start / kill
        self._proc: subprocess.Popen | None = None
        self._replies: queue.Queue[str | None] = queue.Queue()
        self._log: collections.deque[str] = collections.deque(maxlen=LOG_LINES)  # the driver's stderr
        self._logged = 0  # lines ever appended to _log: a job's own lines are those after its mark
        self._work: str | None = None
        self._closed = False
        self.starts = 0  # how many drivers this client has started (tests, diagnostics)
        _LIVE.add(self)

    # --- SparkClient -----------------------------------------------------------------------

    def run(self, job: SparkJob, timeout: float | None = None) -> SparkReport:
        timeout = self.settings.timeout_s if timeout is None else timeout
        with self._run_lock:
            if self._closed:
                raise PuffinError("this LocalSpark is closed")
            self._ensure_started()
            started = time.perf_counter()
            result_dir = os.path.join(self._work, f"result-{time.monotonic_ns()}") if job.want_result else None
            log_mark = self._logged
            line = json.dumps({
                "inputs": [{"name": i.name, "path": i.path, "format": i.format} for i in job.inputs],
                "statements": list(job.statements),
                "values": list(job.values),
                "result": result_dir,
                "report": None,
            })
            try:
                self._proc.stdin.write(line + "\n")
                self._proc.stdin.flush()
                reply = self._reply(None if timeout is None else started + timeout, timeout)
            except BaseException:
                self._kill()  # timed out, interrupted, or the pipe broke: this Spark is done
                raise
            try:
                log_tail = self._job_log(log_mark, reply.get("log_tail"))
                if not reply.get("ok"):
                    raise self._error(reply, job, log_tail)
                result = _read_result(result_dir, reply.get("columns")) if result_dir else None
            finally:
                if result_dir:
                    shutil.rmtree(result_dir, ignore_errors=True)
            return SparkReport(result=result, statements=reply.get("statements") or [],
                               seconds=time.perf_counter() - started, log_tail=log_tail)

    def close(self) -> None:
        self._closed = True
        self._kill(graceful=True)
        _LIVE.discard(self)

    # --- the driver process ----------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The driver's process id while it runs (its JVM is a child of it)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def _ensure_started(self) -> None:
        with self._proc_lock:
            if self._proc is not None and self._proc.poll() is None:
                return
            self._cleanup()
            self._start()
        try:
            ready = self._reply(time.perf_counter() + START_TIMEOUT_S, starting=True)
        except BaseException:
            self._kill()
            raise
        if not ready.get("ok"):
            tail = "\n".join(part for part in (self._tail(), ready.get("log_tail")) if part)
            self._kill()
            raise PuffinError(f"local {ready.get('error') or 'Spark did not start'}\n{tail}")

    def _start(self) -> None:
        self._work = tempfile.mkdtemp(prefix="puffin-spark-")
        conf = dict(self.conf)
        conf.setdefault("spark.local.dir", self._work)
        conf.setdefault("spark.sql.warehouse.dir", os.path.join(self._work, "spark-warehouse"))
        java_opts = conf.get("spark.driver.extraJavaOptions") or LOCAL_JAVA_OPTIONS
        conf["spark.driver.extraJavaOptions"] = f"{java_opts} -Djava.io.tmpdir={self._work}"
        env = dict(os.environ)
        env.pop("SPARK_HOME", None)  # pip's pyspark brings its own launcher and jars
        env.pop("PYSPARK_DRIVER_PYTHON", None)
        env["PYSPARK_PYTHON"] = sys.executable
        env["SPARK_LOCAL_IP"] = "127.0.0.1"
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
        java = _java_home()
        if java and not env.get("JAVA_HOME"):
            env["JAVA_HOME"] = java
        if self._s3.access_key_id and self._s3.secret_access_key:  # S3FileIO's default chain reads these
            env["AWS_ACCESS_KEY_ID"] = self._s3.access_key_id.value
            env["AWS_SECRET_ACCESS_KEY"] = self._s3.secret_access_key.value
        if self._s3.region:
            env["AWS_REGION"] = self._s3.region
        self._replies = queue.Queue()
        self._log.clear()
        self._proc = subprocess.Popen(
            [sys.executable, str(DRIVER), "--serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, bufsize=1, cwd=self._work, env=env,
            start_new_session=True,  # the driver and its JVM form one process group to kill
        )
        self.starts += 1
        threading.Thread(target=_pump, args=(self._proc.stdout, self._replies.put, True), daemon=True,
                         name="puffin-spark-stdout").start()
        threading.Thread(target=_pump, args=(self._proc.stderr, self._log_line, False), daemon=True,
                         name="puffin-spark-stderr").start()
        self._proc.stdin.write(json.dumps({"conf": conf}) + "\n")
        self._proc.stdin.flush()

    def _reply(self, deadline: float | None, timeout: float | None = None, starting: bool = False) -> dict:
        """The driver's next reply; QueryCancelled past deadline, an error if the driver died."""
        while True:
            wait = None if deadline is None else deadline - time.perf_counter()
            if wait is not None and wait <= 0:
                if starting:
                    raise PuffinError(f"local Spark did not start within {START_TIMEOUT_S:g} s\n{self._tail()}")
                raise QueryCancelled(f"the Spark job ran past its timeout of {timeout:g} s and was cancelled "
                                     "(its Spark was stopped; the next job starts another)")
            try:
                line = self._replies.get(timeout=None if wait is None else min(wait, 1.0))
            except queue.Empty:
                continue
            if line is None:  # stdout closed: the driver is gone
                if self._closed:
                    raise PuffinError("this LocalSpark was closed while the job ran")
                code = self._proc.wait(10) if self._proc else None
                what = "did not start" if starting else "died while running the job"
                raise (PuffinError if starting else ExecutionError)(
                    f"local Spark {what} (exit code {code})\n{self._tail()}")
            return json.loads(line)

    def _kill(self, graceful: bool = False) -> None:
        with self._proc_lock:
            proc, self._proc = self._proc, None
            if proc is not None:
                if graceful and proc.poll() is None:
                    with contextlib.suppress(OSError):
                        proc.stdin.close()  # the driver stops Spark and exits
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(5)
                # The group may still hold the JVM after the driver exited.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
                _wait_group_gone(proc.pid)
                for stream in (proc.stdin, proc.stdout, proc.stderr):
                    with contextlib.suppress(OSError, ValueError):
                        stream.close()
            self._cleanup()

    def _cleanup(self) -> None:
        if self._work:
            shutil.rmtree(self._work, ignore_errors=True)
            self._work = None

    # --- reports and errors ----------------------------------------------------------------

    def _tail(self, lines: list[str] | None = None) -> str:
        lines = list(self._log) if lines is None else lines
        return "\n".join(lines[-LOG_TAIL_LINES:])

    def _log_line(self, line: str) -> None:
        self._log.append(line)
        self._logged += 1

    def _job_log(self, mark: int, driver_tail: str | None) -> str:
        lines = list(self._log)
        lines = lines[max(len(lines) - (self._logged - mark), 0):]
        lines = [ln for ln in lines if not ln.startswith("@@puffin")]
        if driver_tail:
            lines += driver_tail.splitlines()
        return self._tail(lines)

    @staticmethod
    def _error(reply: dict, job: SparkJob, log_tail: str) -> ExecutionError:
        err = ExecutionError(reply.get("error") or "Spark job failed", remote_traceback=log_tail)
        err.error_class = reply.get("error_class")
        failed = reply.get("failed")
        err.statement = job.statements[failed] if isinstance(failed, int) and failed < len(job.statements) else None
        return err


def _pump(stream, put, end_marker: bool) -> None:
    """Copy lines from the driver's stdout/stderr; put(None) at EOF for stdout."""
    with contextlib.suppress(ValueError, OSError):
        for line in stream:
            put(line.rstrip("\n"))
    if end_marker:
        put(None)


def _read_result(path: str, columns: list[str] | None) -> pa.Table:
    """The driver's Parquet result, with its real column names and no Spark metadata."""
    if not columns:
        return pa.table({})
    table = pq.read_table(path)
    fields = [pa.field(name, f.type, nullable=True) for name, f in zip(columns, table.schema, strict=True)]
    return pa.Table.from_arrays(table.columns, schema=pa.schema(fields))


def _wait_group_gone(pgid: int, limit_s: float = 10.0) -> None:
    """Wait until no process of the group is left (the JVM dies, and is reaped, a bit later)."""
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)


def _java_home() -> str | None:
    java = shutil.which("java")
    return str(Path(os.path.realpath(java)).parent.parent) if java else None


@atexit.register
def _close_all() -> None:
    for client in list(_LIVE):
        with contextlib.suppress(Exception):
            client._kill()
