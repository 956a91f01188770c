"""The Engine and Catalog function entry points (AWS Lambda handlers, container image CMD).

``handler(event, context)`` runs one scan fragment with the same ``run_fragment`` a Ray task
runs: the function reads its inputs from S3 itself (through the warm-partition cache), and
returns the output partitions inline (compressed Arrow IPC) when they fit the 6 MB synchronous
limit, else as one object under ``<prefix>/<query>/<stage>/<task>/<attempt>/data.arrows`` with
a pointer. Whenever it writes to S3 it also writes ``.../done.json`` (the response) last: a
repeated invocation of the same attempt finds it and answers from it, and the driver's Event
(asynchronous) path polls for it. ``catalog_handler`` plans an Iceberg scan next to the data.

A failing fragment either returns ``{"ok": false, "error": {..., "user": true}}`` (DuckDB
rejected the data or the SQL: it would fail on Ray too) or raises (everything else), which
Lambda reports as ``X-Amz-Function-Error: Unhandled`` and the driver answers by running the
fragment on Ray. A failure of the storage under it (a broken S3 read or connection: see
``transient``) is raised as ``FunctionTransientError``, which the driver invokes again after a
backoff before it gives the fragment to Ray.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
import traceback
import uuid
from typing import Any

if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):  # on Lambda only /tmp is writable
    os.environ["HOME"] = "/tmp"
    os.environ.setdefault("TMPDIR", "/tmp")
    tempfile.tempdir = None


from puffin.lambda_bridge import payload as wire
from puffin.lambda_bridge.cache import CacheStats, FileCache
from puffin.lambda_bridge.errors import FunctionTransientError
from puffin.operators.fragment import database, error_text, run_fragment
from puffin.storage import s3_filesystem

INSTANCE = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
CACHE = FileCache.from_env()
MEMORY_FRACTION = 0.6  # of the function's memory for DuckDB; the rest: Python, Arrow results, IPC buffers
_STATE = {"invocations": 0, "configured": False}
_CATALOGS: dict[str, Any] = {}  # the Catalog function's loaded catalogs, oldest first
_INFRA_DUCKDB_ERRORS = ("IOException", "HTTPException", "OutOfMemoryException", "InternalException",
                        "FatalException", "ConnectionException")
_TRANSIENT_DUCKDB_ERRORS = ("IOException", "HTTPException", "ConnectionException")
_NOT_TRANSIENT_OS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)
_NOT_TRANSIENT_TEXT = ("ACCESS_DENIED", "AccessDenied", "NO_SUCH", "NoSuch", "does not exist", "Forbidden",
                      "No files found", "No such file")


def transient(e: BaseException) -> bool:
    """Whether a failure says nothing about the fragment itself: an S3 read or a connection that
    broke (worth invoking again), not a missing or forbidden object, not a wrong query."""
    if isinstance(e, FunctionTransientError):
        return True
    name = type(e).__name__
    if isinstance(e, OSError) and not isinstance(e, _NOT_TRANSIENT_OS) or name in _TRANSIENT_DUCKDB_ERRORS:
        return not any(t in str(e) for t in _NOT_TRANSIENT_TEXT)
    return False


def _as_transient(e: Exception) -> Exception:
    """``e``, or a ``FunctionTransientError`` saying it (raised from ``e``) when it is transient."""
    if isinstance(e, FunctionTransientError) or not transient(e):
        return e
    return FunctionTransientError(f"{type(e).__name__}: {error_text(e)}")


def _configure_duckdb() -> None:
    """DuckDB's home and temp directories under /tmp; no extension is ever downloaded."""
    if _STATE["configured"]:
        return
    home = os.path.join(tempfile.gettempdir(), "puffin-duckdb-home")
    os.makedirs(home, exist_ok=True)
    db = database()
    db.execute(f"SET home_directory = '{home}'")
    db.execute("SET autoinstall_known_extensions = false")
    _STATE["configured"] = True


def fit_to_function(fragment):
    """The fragment sized to this function instance: DuckDB threads for its vCPUs (1,769 MB of
    memory is one vCPU) and a memory limit under the function's memory, so DuckDB spills to /tmp
    instead of the instance being killed. Off Lambda (no memory size in the environment): as is."""
    mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE") or 0)
    if mb <= 0:
        return fragment
    vcpus = max(1, min(os.cpu_count() or 1, math.ceil(mb / 1769)))
    limit = int(mb * MEMORY_FRACTION) << 20
    return dataclasses.replace(fragment, threads=max(fragment.threads, vcpus),
                               memory_limit=min(fragment.memory_limit or limit, limit))


def _store(results: dict | None):
    """(filesystem, bucket, prefix) of the result store the request names, or None."""
    if not results:
        return None
    bucket, prefix = wire.split_url(results["url"])
    return s3_filesystem(wire.s3_from_dict(results.get("s3") or {})), bucket, prefix


def _read_marker(store, key: str) -> dict | None:
    fs, bucket, _ = store
    try:
        with fs.open_input_stream(f"{bucket}/{key}/done.json") as f:
            return json.loads(f.read())
    except (FileNotFoundError, OSError):
        return None


def _write(store, key: str, data: bytes) -> str:
    fs, bucket, _ = store
    with fs.open_output_stream(f"{bucket}/{key}") as f:
        f.write(data)
    return f"s3://{bucket}/{key}"


def _begin(context) -> dict:
    _STATE["invocations"] += 1
    return {"instance": INSTANCE, "cold": _STATE["invocations"] == 1, "invocation": _STATE["invocations"],
            "request_id": getattr(context, "aws_request_id", None)}


def handler(event: dict, context: Any = None) -> dict:
    """Run one fragment (see the module doc and ``payload`` for the request/response shapes)."""
    start = time.perf_counter()
    req = wire.check_request(event, "fragment")
    info = _begin(context)
    store = _store(req.get("results"))
    key = wire.result_key(store[2], req["query_id"], req["stage"], req["task"], req["attempt"]) if store else None
    if store is not None:
        done = _read_marker(store, key)
        if done is not None and done.get("ok"):
            return {**done, **info, "replayed": True}
    try:
        response = _run(req, store, key, info)
    except Exception as e:
        marked = _as_transient(e)
        if req.get("reply") != "s3" or store is None:
            if marked is e:
                raise
            raise marked from e
        response = {"puffin": wire.VERSION, "ok": False, **info,
                    "error": {"type": type(marked).__name__, "message": error_text(marked), "user": False,
                              "traceback": traceback.format_exc(limit=20)}}
    response["handler_ms"] = round((time.perf_counter() - start) * 1000, 3)
    if store is not None and (req.get("reply") == "s3" or "object" in response):
        _write(store, f"{key}/done.json", json.dumps(response).encode())
    return response


def _run(req: dict, store, key: str | None, info: dict) -> dict:
    _configure_duckdb()
    fragment = wire.unpack_object(req["fragment"])
    if fragment.inputs:
        raise ValueError(f"fragment {fragment.stage_id}.{fragment.task} has exchange inputs "
                         f"{list(fragment.inputs)}: only scan fragments run on Lambda")
    before = CacheStats(**vars(CACHE.stats))
    local = CACHE.localize(fit_to_function(fragment))
    try:
        parts, metrics = run_fragment(local, {}, None)
    except Exception as e:
        import duckdb

        user = isinstance(e, duckdb.Error) and type(e).__name__ not in _INFRA_DUCKDB_ERRORS
        if not user:
            raise
        return {"puffin": wire.VERSION, "ok": False, **info,
                "error": {"type": type(e).__name__, "message": error_text(e), "user": True}}
    cache = {**vars(CACHE.stats.since(before)), "used_bytes": CACHE.used}
    out = {"puffin": wire.VERSION, "ok": True, **info, "metrics": wire.metrics_to_dict(metrics), "cache": cache,
           "partitions": len(parts)}
    blobs = [wire.ipc_bytes(p) for p in parts]
    size = sum(len(b) for b in blobs)
    out["result_bytes"] = size
    if req.get("reply") == "sync" and size * 4 // 3 + 4096 <= wire.INLINE_BUDGET:
        import base64

        out["inline"] = [base64.b64encode(b).decode() for b in blobs]
        return out
    if store is None:
        raise ValueError(f"the result ({size} bytes compressed) exceeds the {wire.SYNC_LIMIT}-byte inline "
                         "limit and no result store (results url) was given")
    offsets = [0]
    for b in blobs:
        offsets.append(offsets[-1] + len(b))
    url = _write(store, f"{key}/data.arrows", b"".join(blobs))
    out["object"] = {"url": url, "offsets": offsets}
    return out


def catalog_handler(event: dict, context: Any = None) -> dict:
    """Plan an Iceberg scan with pyiceberg next to the data.

    Request: ``{"puffin": 1, "kind": "catalog", "catalog": name, "config": {pyiceberg props},
    "s3": {...}, "table": "namespace.table", "snapshot_id": id | null, "filter": packed pyiceberg
    expression | null, "query_id": ..., "results": {...} | null}``. Response: the file list
    (``files``: path, records, bytes, delete files) and ``units`` (packed ``ScanUnit`` tuple
    holding pyiceberg ``FileScanTask``s, what ``puffin.iceberg.IcebergTable.plan`` returns), or a
    pointer to them on S3 when they exceed the inline limit.
    """
    req = wire.check_request(event, "catalog")
    info = _begin(context)
    start = time.perf_counter()
    try:
        return _plan(req, info, start)
    except Exception as e:
        marked = _as_transient(e)
        if marked is e:
            raise
        raise marked from e


def _plan(req: dict, info: dict, start: float) -> dict:
    from pyiceberg.expressions import AlwaysTrue

    from puffin.iceberg import Catalogs, IcebergRead, IcebergTable

    name = req["catalog"]
    key = json.dumps([name, req.get("config") or {}, req.get("s3") or {}], sort_keys=True, default=str)
    cat = _CATALOGS.get(key)
    if cat is None:  # a warm instance keeps its catalogs (a SQL catalog's engine, a REST session)
        s3 = wire.s3_from_dict(req.get("s3") or {})
        cat = Catalogs({name: dict(req.get("config") or {})}, s3).catalog(name)
        _CATALOGS[key] = cat
        while len(_CATALOGS) > 8:
            _CATALOGS.pop(next(iter(_CATALOGS)))
    namespace, _, table = req["table"].rpartition(".")
    tbl = cat.load_table((namespace, table))
    snapshot_id = req.get("snapshot_id") or tbl.metadata.current_snapshot_id
    row_filter = wire.unpack_object(req["filter"]) if req.get("filter") else AlwaysTrue()
    projected = tbl.scan(snapshot_id=snapshot_id).projection()
    read = IcebergRead(tbl.metadata, dict(tbl.io.properties), projected, row_filter)
    units = IcebergTable(f"{name}.{req['table']}", tbl, snapshot_id, read).plan(row_filter)
    files = [{"path": u.path, "records": u.rows, "bytes": u.bytes, "deletes": len(u.task.delete_files)}
             for u in units]
    out = {"puffin": wire.VERSION, "ok": True, **info, "snapshot_id": snapshot_id, "files": files,
           "units": wire.pack_object(units)}
    out["handler_ms"] = round((time.perf_counter() - start) * 1000, 3)
    if len(json.dumps(out)) > wire.INLINE_BUDGET:
        store = _store(req.get("results"))
        if store is None:
            raise ValueError("the scan plan exceeds the inline limit and no result store was given")
        key = wire.result_key(store[2], req.get("query_id", "catalog"), 0, 0, 0) + f"/plan-{uuid.uuid4().hex}.json"
        out = {**info, "puffin": wire.VERSION, "ok": True, "object": {"url": _write(store, key, json.dumps(out).encode())}}
    return out


__all__ = ["catalog_handler", "handler"]
