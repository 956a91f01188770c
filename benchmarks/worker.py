"""Long-lived engine worker: ``python -m benchmarks.worker ENGINE`` (run from the repo root).

Speaks JSON lines: one request per line on stdin, one response per line on the original
stdout. Everything else the engine prints (Spark, Ray, Daft logs) goes to stderr, which the
harness sends to a log file. Requests::

    (on start, once)                                  -> {"ok": true, "pid": 123, "start_s": 0.8}
    {"op": "load", "tables": {name: dir}} -> {"ok": true, "version": "...", "seconds": 0.01}
    {"op": "run", "sql": "...", "result": "/path.arrow" | null}
        -> {"ok": true, "seconds": 0.12, "rows": 4}       (result written as Arrow IPC file)
    {"op": "probe", "sql": "...", "n": 20} -> {"ok": true, "seconds": [...]}
    {"op": "explain", "sql": "..."} -> {"ok": true, "text": "..."}          (EXPLAIN ANALYZE)
    {"op": "plan", "sql": "...", "n": 3} -> {"ok": true, "seconds": [...], "texts": [...]}
                                                  (plain EXPLAIN n times, wall time of each)
    {"op": "register_corpus"} -> {"ok": true, "tables": [...]}
                                                  (the SQL corpora's in-memory tables)
    {"op": "close"} -> {"ok": true}, then exit

A failure answers {"ok": false, "error": "Type: message", "traceback": "..."} and the worker
keeps serving. Timing covers running the query and materialising the full result as a
pyarrow Table in this process; writing the IPC file is outside it. ``start_s`` is the time
to import the engine and connect (``puffin.connect()``, ``duckdb.connect()``, a Spark session).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import traceback

_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Ray colours its remote tracebacks


def _failure(exc: BaseException) -> dict:
    return {
        "ok": False,
        "error": _ANSI.sub("", f"{type(exc).__name__}: {exc}"),
        "traceback": _ANSI.sub("", traceback.format_exc()),
    }


def _write_ipc(table, path: str) -> None:
    import pyarrow as pa

    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def _timed_run(engine, sql: str):
    start = time.perf_counter()
    table = engine.run(sql)
    return time.perf_counter() - start, table


def handle(engine, request: dict) -> dict:
    op = request["op"]
    if op == "load":
        start = time.perf_counter()
        engine.load(request["tables"])
        return {"version": engine.version(), "seconds": time.perf_counter() - start}
    if op == "run":
        seconds, table = _timed_run(engine, request["sql"])
        if request.get("result"):
            _write_ipc(table, request["result"])
        return {"seconds": seconds, "rows": table.num_rows}
    if op == "probe":
        return {"seconds": [_timed_run(engine, request["sql"])[0] for _ in range(request["n"])]}
    if op == "explain":
        return {"text": engine.explain_analyze(request["sql"])}
    if op == "plan":
        seconds, texts = [], []
        for _ in range(request.get("n", 1)):
            start = time.perf_counter()
            texts.append(engine.plan(request["sql"]))
            seconds.append(time.perf_counter() - start)
        return {"seconds": seconds, "texts": texts}
    if op == "register_corpus":
        from tests.sql.test_corpora import corpus_tables  # the repository's own corpus tables

        tables = corpus_tables()
        for name, table in tables.items():
            engine.register_arrow(name, table)
        return {"tables": sorted(tables)}
    raise ValueError(f"unknown op {op!r}")


def main() -> None:
    name = sys.argv[1]
    options = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints of the engine (and of child processes) go to stderr
    sys.stdout = sys.stderr

    def reply(payload: dict) -> None:
        protocol.write(json.dumps(payload) + "\n")

    from benchmarks.engines import load_engine_class

    start = time.perf_counter()
    try:
        engine = load_engine_class(name)(**options)
    except Exception as exc:  # noqa: BLE001 - reported to the harness, which records it
        reply(_failure(exc))
        return
    reply({"ok": True, "pid": os.getpid(), "start_s": time.perf_counter() - start})
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "close":
            break
        try:
            reply({"ok": True, **handle(engine, request)})
        except Exception as exc:  # noqa: BLE001 - one failing query must not end the worker
            reply(_failure(exc))
    try:
        engine.close()
    finally:
        reply({"ok": True})


if __name__ == "__main__":
    main()
