"""The wire format between the driver and the Engine/Catalog functions (version 1).

A request is a JSON object (Lambda events must be JSON)::

    {"puffin": 1, "kind": "fragment", "query_id": "q-...", "stage": 3, "task": 2, "attempt": 0,
     "fragment": "<base64 of zstd(pickle(Fragment))>", "reply": "sync" | "s3",
     "results": {"url": "s3://bucket/prefix", "s3": {...S3Config fields...}} | null}

A response carries the output partitions inline as base64 of zstd-compressed Arrow IPC streams
(``"inline": [...]``) or, when they do not fit the 6 MB synchronous limit, a pointer to one S3
object holding the streams back to back (``"object": {"url", "offsets"}``), plus the fragment's
``Metrics`` and the cache counters. Keys are deterministic in (query, stage, task, attempt), so an
invocation that runs twice writes the same object. Nothing here imports boto3 or Ray.
"""

from __future__ import annotations

import base64
import dataclasses
import pickle
from typing import Any

import pyarrow as pa

from puffin.storage import S3Config, Secret

VERSION = 1
CODEC = "zstd"
SYNC_LIMIT = 6 * 1024 * 1024  # bytes, each way, RequestResponse
ASYNC_LIMIT = 256 * 1024  # bytes, Event request (AWS raised it to 1 MB in 2025; the local service enforces this)
INLINE_BUDGET = SYNC_LIMIT - 64 * 1024  # room left for metrics and JSON framing


class PayloadError(ValueError):
    """A request or response that is not Puffin's (wrong version, missing fields)."""


def pack_object(obj: Any) -> str:
    raw = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return base64.b64encode(pa.compress(raw, codec=CODEC, asbytes=True)).decode() + f":{len(raw)}"


def unpack_object(text: str) -> Any:
    body, _, size = text.rpartition(":")
    raw = pa.decompress(base64.b64decode(body), decompressed_size=int(size), codec=CODEC, asbytes=True)
    return pickle.loads(raw)


def ipc_bytes(table: pa.Table) -> bytes:
    """One partition as a zstd-compressed Arrow IPC stream."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression=CODEC)) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def read_ipc(data: bytes | memoryview) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def s3_to_dict(config: S3Config | None, credentials: bool = True) -> dict | None:
    if config is None:
        return None
    out = {}
    for f in dataclasses.fields(config):
        v = getattr(config, f.name)
        if isinstance(v, Secret):
            v = v.value if credentials else None
        out[f.name] = v
    if not credentials:
        out["profile"] = None
    return out


def s3_from_dict(d: dict | None) -> S3Config | None:
    if d is None:
        return None
    kwargs = dict(d)
    for k in ("access_key_id", "secret_access_key", "session_token"):
        if kwargs.get(k):
            kwargs[k] = Secret(kwargs[k])
        else:
            kwargs[k] = None
    return S3Config(**kwargs)


def split_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> ("bucket", "prefix") without trailing slash."""
    if not url.startswith("s3://"):
        raise PayloadError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[5:].partition("/")
    return bucket, prefix.strip("/")


def result_key(prefix: str, query_id: str, stage: int, task: int, attempt: int) -> str:
    """Where an invocation's large result and completion marker live (deterministic)."""
    base = f"{query_id}/{stage}/{task}/{attempt}"
    return f"{prefix}/{base}" if prefix else base


def fragment_request(fragment, query_id: str, attempt: int, reply: str, results: dict | None) -> dict:
    return {"puffin": VERSION, "kind": "fragment", "query_id": query_id, "stage": fragment.stage_id,
            "task": fragment.task, "attempt": attempt, "fragment": pack_object(fragment), "reply": reply,
            "results": results}


def check_request(event: Any, kind: str) -> dict:
    if not isinstance(event, dict) or event.get("puffin") != VERSION or event.get("kind") != kind:
        got = event.get("puffin") if isinstance(event, dict) else type(event).__name__
        raise PayloadError(f"not a Puffin v{VERSION} {kind} request (got version {got!r})")
    return event


def metrics_to_dict(m) -> dict:
    return dataclasses.asdict(m)


def metrics_from_dict(d: dict):
    from puffin.operators.fragment import Metrics

    names = {f.name for f in dataclasses.fields(Metrics)}
    return Metrics(**{k: v for k, v in d.items() if k in names})
