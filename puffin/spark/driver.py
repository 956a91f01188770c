"""Puffin's Spark driver: runs a job of Spark SQL statements against Iceberg catalogs.

Standalone on purpose (standard library + pyspark, boto3 if present; no puffin imports): the
same file runs locally under ``puffin.spark.local`` and is uploaded to S3 and run by
``spark-submit`` on EMR / EMR Serverless.

Job (JSON)::

    {"conf": {"spark.sql.catalog.lake": ..., ...},       # Spark conf for the session
     "inputs": [{"name": "src", "path": "s3://b/in/", "format": "parquet"}],  # temp views
     "statements": ["SELECT count(*) ...", "MERGE INTO lake.db.t USING src ...", ...],
     "values": [0],                            # one-value queries: their value goes in "value"
     "result": "s3://b/out/result/" | null,    # the last statement's rows go here, as Parquet
     "report": "s3://b/out/report.json" | null}

Report (JSON)::

    {"ok": true | false, "error": <Spark's message, no Java stack> | null,
     "error_class": "TABLE_OR_VIEW_NOT_FOUND" | null, "failed": <statement index> | null,
     "statements": [{"sql", "seconds", "table"?, "snapshot_id"?, "operation"?, "summary"?,
                     "rows"?, "rows_exact"?, "value"?, "error"?}],
     "columns": [<result column names>] | null, "seconds": <total>, "log_tail": "..."}

The result Parquet's columns are named ``_c0, _c1, ...`` (Spark refuses duplicate names, and
Parquet some characters); ``columns`` holds the real names, in order. Timestamps are written as
INT64 microseconds, not INT96.

Modes:

- ``spark-submit driver.py --job <path | file:// | s3:// uri>``: one job, then exit 0 when it
  succeeded, 1 when it did not; the report goes to the job's ``report`` (and stdout when null).
  An ``s3://`` job or report is read and written with boto3 when it is importable, else with
  Spark's Hadoop FileSystem (EMRFS on EMR).
- ``python driver.py --serve``: a persistent local driver. The first line on stdin is
  ``{"conf": {...}}`` and starts the SparkSession (reply ``{"ok": true, "ready": true,
  "spark": <version>}``, or ``{"ok": false, "error": ...}`` and exit 1); every further line is
  a job (its ``conf`` is ignored: Spark's static conf cannot change in a running session), and
  the reply, one line of JSON on stdout, is its report. The session, and so the JVM, lives
  until stdin closes or the parent process dies. Everything else that writes to stdout (the
  JVM included) is sent to stderr, so stdout carries replies only.

Rows per statement: for a statement that writes an Iceberg table (INSERT INTO / OVERWRITE,
CREATE [OR REPLACE] TABLE ... AS, REPLACE TABLE ... AS, DELETE, UPDATE, MERGE), the target
table's current snapshot is read before and after (through Iceberg's Java table API: the same
snapshot id, operation and summary as its ``.snapshots`` metadata table, without a Spark job);
a new snapshot is reported with its summary, and ``rows`` from that summary, with
A = added-records, R = deleted-records, P = added-position-deletes - removed-position-deletes
(a data file's delete file is rewritten, old positions included, when more of its rows go):

- INSERT INTO / INSERT OVERWRITE / CTAS / RTAS: rows = A (exact).
- DELETE: rows = P + R - A (exact: merge-on-read adds one position delete per row, copy-on-
  write removes files of R rows and rewrites their A survivors, whole-file deletes drop R).
- UPDATE: merge-on-read: rows = P (exact: each updated row gets a position delete and a new
  row). Copy-on-write (P = 0, R > 0): the summary counts every row of the rewritten files,
  changed or not, so rows = None and ``rows_exact`` is false.
- MERGE: exact only when the summary cannot mix kinds: nothing removed (P = R = 0: inserts
  only) gives rows = A; nothing added (A = 0: deletes only) gives rows = P + R. Otherwise
  (updates, or deletes mixed with inserts) rows = None and ``rows_exact`` is false.

A statement that made no new snapshot (a DELETE that matched nothing, say) reports rows = 0.
Where rows is None, Puffin sends a count of the rows the statement changes as a one-value
statement (``values``) just before it, and reports that.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import re
import sys
import threading
import time
import traceback

LOG_TAIL_LINES = 60
ERROR_LINES = 8

# The target table of a statement that writes one (Spark SQL, as puffin.spark.transpile makes).
_NAME = r"((?:`[^`]+`|[A-Za-z_][\w$]*)(?:\s*\.\s*(?:`[^`]+`|[A-Za-z_][\w$]*))*)"
_WRITES = [
    ("insert", re.compile(r"^\s*INSERT\s+(?:INTO|OVERWRITE)\s+(?:TABLE\s+)?" + _NAME, re.IGNORECASE)),
    ("insert", re.compile(r"^\s*(?:CREATE\s+(?:OR\s+REPLACE\s+)?|REPLACE\s+)TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?"
                          + _NAME + r"[^;]*?\bAS\b", re.IGNORECASE | re.DOTALL)),
    ("delete", re.compile(r"^\s*DELETE\s+FROM\s+" + _NAME, re.IGNORECASE)),
    ("update", re.compile(r"^\s*UPDATE\s+" + _NAME, re.IGNORECASE)),
    ("merge", re.compile(r"^\s*MERGE\s+INTO\s+" + _NAME, re.IGNORECASE)),
]


def write_target(sql: str) -> tuple[str, str] | None:
    """(kind, table) for a statement that writes a table, else None."""
    sql = re.sub(r"^(\s*(--[^\n]*\n|/\*.*?\*/))*", "", sql, flags=re.DOTALL)
    for kind, pattern in _WRITES:
        m = pattern.match(sql)
        if m:
            return kind, re.sub(r"\s+", "", m.group(1))
    return None


def rows_from_summary(kind: str, summary: dict) -> tuple[int | None, bool]:
    """(rows, exact) by the rule in the module docstring."""
    def n(key: str) -> int:
        return int(summary.get(key) or 0)

    # A delete file scoped to one data file (Iceberg's default granularity) is rewritten with
    # the old positions when more rows of that file go: only the difference is new.
    a, r = n("added-records"), n("deleted-records")
    p = n("added-position-deletes") - n("removed-position-deletes")
    if kind == "insert":
        return a, True
    if kind == "delete":
        return p + r - a, True
    if kind == "update":
        return (p, True) if p or not r else (None, False)
    if p == 0 and r == 0:
        return a, True
    if a == 0:
        return p + r, True
    return None, False


class Driver:
    """One SparkSession and the jobs run in it."""

    def __init__(self, conf: dict, log: collections.deque):
        from pyspark.sql import SparkSession

        builder = SparkSession.builder
        for k, v in conf.items():
            builder = builder.config(k, str(v))
        self.spark = builder.getOrCreate()
        self.spark.sparkContext.setLogLevel("WARN")
        # Result files hold INT64 microsecond timestamps (readable everywhere), not INT96.
        self.spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        self.log = log
        for name, uri in conf.items():
            prefix, _, rest = name.partition("spark.sql.catalog.")
            if not prefix and rest.endswith(".uri") and str(uri).startswith("jdbc:sqlite:"):
                self._release_sqlite_locks(rest[: -len(".uri")])

    def _release_sqlite_locks(self, catalog: str) -> None:
        """Close the SQLite connections Iceberg's JdbcCatalog opened while initialising.

        JdbcCatalog.initialize (Iceberg 1.10.2) leaves two DatabaseMetaData result sets open
        (getTables, getColumns). On SQLite an open statement keeps a SHARED lock on the file, so
        while this session lives no other process (pyiceberg, Puffin) could commit to the catalog
        ("database is locked"). The pool makes fresh connections on demand.
        """
        try:
            plugin = self.spark._jsparkSession.sessionState().catalogManager().catalog(catalog)
            jdbc = plugin.icebergCatalog()
            if jdbc.getClass().getSimpleName() != "JdbcCatalog":
                return
            pool = _field(jdbc, jdbc.getClass(), "connections")
            pool_class = pool.getClass().getSuperclass()  # ClientPoolImpl
            clients = _field(pool, pool_class, "clients")
            closed = 0
            while not clients.isEmpty():
                clients.pollFirst().close()
                closed += 1
            size = pool_class.getDeclaredField("currentSize")
            size.setAccessible(True)
            size.setInt(pool, max(size.getInt(pool) - closed, 0))
        except Exception as e:  # noqa: BLE001 - only a lock other writers may wait on; say so
            print(f"@@puffin could not release the SQLite catalog {catalog!r}'s connections: {e}",
                  file=sys.stderr, flush=True)

    def run(self, job: dict) -> dict:
        started = time.perf_counter()
        report = {"ok": True, "error": None, "error_class": None, "failed": None,
                  "statements": [], "columns": None}
        views = []
        try:
            for inp in job.get("inputs") or []:
                df = self.spark.read.format(inp.get("format") or "parquet").load(inp["path"])
                df.createOrReplaceTempView(inp["name"])
                views.append(inp["name"])
            statements = list(job.get("statements") or [])
            values = set(job.get("values") or [])
            for i, sql in enumerate(statements):
                report["failed"] = i
                if i in values:
                    report["statements"].append(self._value(sql))
                    continue
                last = i == len(statements) - 1
                report["statements"].append(self._statement(sql, job.get("result") if last else None, report))
            report["failed"] = None
        except Exception as e:  # noqa: BLE001 - every failure becomes the report's error
            report["ok"] = False
            report["error"], report["error_class"] = error_message(e)
            self.log.extend(_stack(e).splitlines()[:LOG_TAIL_LINES])
        finally:
            for name in views:
                with contextlib.suppress(Exception):  # a dead session fails here too; keep its error
                    self.spark.catalog.dropTempView(name)
        report["seconds"] = round(time.perf_counter() - started, 3)
        report["log_tail"] = "\n".join(self.log)
        return report

    def _value(self, sql: str) -> dict:
        """A one-value query (the rows a MERGE will change): its value, or why there is none. It
        only informs the report, so its failure fails nothing."""
        t0 = time.perf_counter()
        print(f"@@puffin value: {sql[:200]}", file=sys.stderr, flush=True)
        entry: dict = {"sql": sql}
        try:
            rows = self.spark.sql(sql).collect()
            entry["value"] = rows[0][0] if rows else None
        except Exception as e:  # noqa: BLE001 - reported, not raised
            entry["value"], entry["error"] = None, error_message(e)[0]
        entry["seconds"] = round(time.perf_counter() - t0, 3)
        return entry

    def _statement(self, sql: str, result: str | None, report: dict) -> dict:
        t0 = time.perf_counter()
        target = write_target(sql)
        before = self._main_snapshot(target[1]) if target else None
        print(f"@@puffin statement: {sql[:200]}", file=sys.stderr, flush=True)
        df = self.spark.sql(sql)  # commands (DDL, DML) run here, queries are lazy
        if result is not None:
            report["columns"] = list(df.columns)
            if not df.columns:  # a command with no output (DELETE ...): no rows, no file
                result = None
        if result is not None:
            df.toDF(*[f"_c{i}" for i in range(len(df.columns))]).write.mode("overwrite").parquet(result)
        elif not _is_command(df):
            df.write.format("noop").mode("overwrite").save()  # run a query whose rows nobody wants
        entry = {"sql": sql}
        if target:
            kind, table = target
            entry.update(self._snapshot_report(kind, table, before))
        entry["seconds"] = round(time.perf_counter() - t0, 3)
        return entry

    def _current_snapshot(self, table: str):
        """The table's current snapshot (Iceberg's Java API: no Spark job), None if none yet."""
        try:
            jvm = self.spark.sparkContext._jvm
            tbl = jvm.org.apache.iceberg.spark.Spark3Util.loadIcebergTable(self.spark._jsparkSession, table)
            tbl.refresh()
            return tbl.currentSnapshot()
        except Exception:  # noqa: BLE001 - not there yet (CTAS), or not an Iceberg table
            return None

    def _main_snapshot(self, table: str) -> int | None:
        snap = self._current_snapshot(table)
        return snap.snapshotId() if snap is not None else None

    def _snapshot_report(self, kind: str, table: str, before: int | None) -> dict:
        snap = self._current_snapshot(table)
        after = snap.snapshotId() if snap is not None else None
        out: dict = {"table": table, "kind": kind}
        if after is None or after == before:
            out.update(snapshot_id=after, rows=0, rows_exact=True)
            return out
        summary = {str(k): str(v) for k, v in dict(snap.summary()).items()}
        rows, exact = rows_from_summary(kind, summary)
        out.update(snapshot_id=after, operation=snap.operation(), summary=summary, rows=rows, rows_exact=exact)
        return out

    def stop(self) -> None:
        self.spark.stop()


def _field(obj, cls, name: str):
    """A private Java field's value (reflection through py4j)."""
    field = cls.getDeclaredField(name)
    field.setAccessible(True)
    return field.get(obj)


def _is_command(df) -> bool:
    """True when Spark already ran the statement (DDL, DML, SET ...): nothing left to execute."""
    try:
        plan = df._jdf.queryExecution().analyzed()
        return plan.getClass().getSimpleName() in ("CommandResult", "LocalRelation")
    except Exception:  # noqa: BLE001 - internal API; executing again is the safe fallback
        return False


def error_message(e: BaseException) -> tuple[str, str | None]:
    """Spark's message for a failure (first lines, no Java stack) and its error class.

    A failed Spark job ("Job aborted due to stage failure: ... Lost task ...: <exception>")
    is reported by its root cause, which is what the statement did wrong (e.g. Iceberg's MERGE
    cardinality check).
    """
    java = getattr(e, "_origin", None) or getattr(e, "java_exception", None)
    error_class = None
    if java is not None:
        chain, seen = [], java
        while seen is not None and len(chain) < 20:
            chain.append(seen)
            seen = seen.getCause()
        for j in chain:
            error_class = error_class or _java_error_class(j)
        message = _clean(_java_message(chain[0]))
        root = chain[-1]
        if message.startswith(("Job aborted", "Writing job aborted")) and len(chain) > 1:
            message = _clean(_java_message(root))
            error_class = _java_error_class(root) or error_class
        elif error_class is None and len(chain) > 1:
            # e.g. Iceberg's "Unknown failure" around SQLite's "[SQLITE_BUSY] ... locked"
            cause = _clean(_java_message(root)).split("\n", 1)[0]
            if cause and cause not in message:
                message += f"\nCaused by: {root.getClass().getSimpleName()}: {cause}"
    else:
        message = _clean(str(e)) or type(e).__name__
        getter = getattr(e, "getErrorClass", None)
        error_class = getter() if callable(getter) else None
    return message, error_class


def _stack(e: BaseException) -> str:
    """The Java stack trace of a Spark failure (Python's traceback for anything else)."""
    stack = getattr(e, "stackTrace", None) or getattr(e, "java_exception", None)
    return str(stack) if stack else "".join(traceback.format_exception(e))


def _java_message(j) -> str:
    """A Java exception's message; an AnalysisException's without the plan Spark appends."""
    try:
        return j.getSimpleMessage()
    except Exception:  # noqa: BLE001 - not an AnalysisException
        return j.getMessage() or j.toString()


def _java_error_class(j) -> str | None:
    try:
        return j.getErrorClass() or None  # SparkThrowable
    except Exception:  # noqa: BLE001 - not a SparkThrowable
        return None


def _clean(message: str) -> str:
    lines = [ln for ln in (message or "").splitlines()
             if not ln.lstrip().startswith(("at ", "... ")) and "JVM stacktrace" not in ln]
    return "\n".join(lines[:ERROR_LINES]).strip()


# --- files: local, file://, s3:// -------------------------------------------------------------

def read_text(uri: str) -> str:
    if uri.startswith("s3://"):
        try:
            import boto3
        except ImportError:
            return _hadoop_read(uri)
        bucket, key = uri[5:].split("/", 1)
        return boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    with open(_local(uri), encoding="utf-8") as f:
        return f.read()


def write_text(uri: str, text: str) -> None:
    if uri.startswith("s3://"):
        try:
            import boto3
        except ImportError:
            return _hadoop_write(uri, text)
        bucket, key = uri[5:].split("/", 1)
        boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=text.encode())
        return
    path = _local(uri)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _local(uri: str) -> str:
    return uri.removeprefix("file://")


def _hadoop_fs(uri: str):
    """Spark's Hadoop FileSystem for uri (EMRFS on EMR), through the gateway spark-submit made."""
    from pyspark import SparkContext

    SparkContext._ensure_initialized()
    jvm = SparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return path.getFileSystem(jvm.org.apache.hadoop.conf.Configuration()), path


def _hadoop_read(uri: str) -> str:
    from pyspark import SparkContext

    fs, path = _hadoop_fs(uri)
    stream = fs.open(path)
    try:
        data = SparkContext._jvm.org.apache.commons.io.IOUtils.toByteArray(stream)
    finally:
        stream.close()
    return bytes(data).decode()


def _hadoop_write(uri: str, text: str) -> None:
    fs, path = _hadoop_fs(uri)
    stream = fs.create(path, True)
    try:
        stream.write(bytearray(text.encode()))
    finally:
        stream.close()


# --- modes ----------------------------------------------------------------------------------

class _Tee:
    """Copies what is written to fd 2 (Python's and a JVM this process starts) into a ring."""

    def __init__(self, lines: collections.deque):
        read_fd, write_fd = os.pipe()
        self.stderr = os.dup(2)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self.lines = lines
        threading.Thread(target=self._pump, args=(read_fd,), daemon=True).start()

    def _pump(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as f:
            for raw in f:
                os.write(self.stderr, raw)
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))


def run_once(job_uri: str) -> int:
    """``--job``: run one job, write its report, exit status 0 / 1."""
    log: collections.deque = collections.deque(maxlen=LOG_TAIL_LINES)
    _Tee(log)
    started = time.perf_counter()
    job = json.loads(read_text(job_uri))
    try:
        driver = Driver(job.get("conf") or {}, log)
    except Exception as e:  # noqa: BLE001 - Spark did not start
        message, error_class = error_message(e)
        report = {"ok": False, "error": f"Spark did not start: {message}", "error_class": error_class,
                  "failed": None, "statements": [], "columns": None}
    else:
        report = driver.run(job)
        driver.stop()
    report["seconds"] = round(time.perf_counter() - started, 3)
    report["log_tail"] = "\n".join(log)
    text = json.dumps(report, default=str)
    if job.get("report"):
        write_text(job["report"], text)
    else:
        print(text, flush=True)
    return 0 if report["ok"] else 1


def serve() -> int:
    """``--serve``: one session, jobs in on stdin, reports out on stdout, one JSON per line."""
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # the JVM and anything else that prints go to stderr
    sys.stdout = sys.stderr
    _exit_with_parent()

    def reply(obj: dict) -> None:
        replies.write(json.dumps(obj, default=str) + "\n")
        replies.flush()

    log: collections.deque = collections.deque(maxlen=LOG_TAIL_LINES)
    first = sys.stdin.readline()
    if not first:
        return 0
    try:
        driver = Driver(json.loads(first).get("conf") or {}, log)
    except Exception as e:  # noqa: BLE001 - Spark did not start: say why, then exit
        message, error_class = error_message(e)
        reply({"ok": False, "error": f"Spark did not start: {message}", "error_class": error_class,
               "log_tail": traceback.format_exc()[-4000:]})
        return 1
    reply({"ok": True, "ready": True, "spark": driver.spark.version})
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            job = json.loads(line)
        except ValueError as e:
            reply({"ok": False, "error": f"bad job line: {e}", "error_class": None, "statements": []})
            continue
        log.clear()  # this job's lines only (the client keeps Spark's own log)
        report = driver.run(job)
        if job.get("report"):
            write_text(job["report"], json.dumps(report, default=str))
        reply(report)
    driver.stop()
    return 0


def _exit_with_parent() -> None:
    """Exit (taking the JVM, whose stdin is ours to close, with us) when the parent dies."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=watch, daemon=True, name="puffin-parent-watch").start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--job", help="run one job (JSON at a local path, file:// or s3:// URI) and exit")
    group.add_argument("--serve", action="store_true", help="serve jobs, one JSON line each, on stdin")
    args = parser.parse_args(argv)
    if args.serve:
        return serve()
    return run_once(args.job)


if __name__ == "__main__":
    sys.exit(main())
