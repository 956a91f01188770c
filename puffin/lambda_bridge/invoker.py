"""The driver's side of the bridge: invoke the Engine function on a fragment, get Arrow back.

``Invoker(settings, s3).invoke(fragment, query_id=..., attempt=...)`` returns
``(partitions, metrics, info)`` or raises ``LambdaUnavailable`` (run it on Ray instead) or
``LambdaQueryError`` (the fragment itself failed). It is thread-safe; at most
``max_concurrency`` invocations are in flight (a semaphore), ``submit`` runs one on its own pool.
Synchronous invocations use RequestResponse; ``mode="event"`` uses an Event invocation and polls
S3 for the completion marker the handler writes. The client is boto3's, configured as the design
asks: read timeout above the function timeout, one pooled connection per concurrent call; it
finds a local service through ``endpoint_url`` or ``AWS_ENDPOINT_URL_LAMBDA``. Retries are the
invoker's own, not botocore's (``puffin.lambda_bridge.retry``): throttles, service errors and
transient function errors are invoked again after a jittered backoff, at most ``max_attempts``
times in all, each retry waiting for a free slot of the concurrency budget like a first attempt.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa

from puffin.lambda_bridge import payload as wire
from puffin.lambda_bridge.errors import (
    FunctionTransientError,
    LambdaQueryError,
    LambdaUnavailable,
    from_botocore_error,
    from_client_error,
    from_function_error,
)
from puffin.lambda_bridge.retry import Attempts, RetryPolicy, run_with_retries
from puffin.lambda_bridge.routing import HashRing, offloadable
from puffin.lambda_bridge.settings import LambdaSettings
from puffin.storage import S3Config, s3_filesystem

READ_TIMEOUT_MARGIN_S = 30
_CRED_KEYS = ("s3.access-key-id", "s3.secret-access-key", "s3.session-token")


@dataclass
class InvokeInfo:
    """How one offloaded fragment ran, for EXPLAIN ANALYZE."""

    function: str
    qualifier: str | None
    mode: str
    cold: bool = False
    instance: str = ""
    request_id: str | None = None
    init_ms: float | None = None  # from the log tail's REPORT line (cold starts)
    wall_ms: float = 0.0
    handler_ms: float = 0.0
    retries: int = 0  # invocations made again (throttles, service errors, transient failures)
    retried: dict = dataclasses.field(default_factory=dict)  # reason -> retries
    backoff_ms: float = 0.0  # waited between attempts
    via: str = "inline"  # inline | s3
    replayed: bool = False  # answered from an earlier run's completion marker
    request_bytes: int = 0
    result_bytes: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    cache_hit_bytes: int = 0
    cache_miss_bytes: int = 0
    cache_bypassed: int = 0  # files read straight from S3 (too big for the cache, CSV/JSON)


class Invoker:
    def __init__(self, settings: LambdaSettings, s3: S3Config | None = None, client=None):
        self.settings = settings
        self.s3 = s3 or S3Config.resolve()
        self.ring = HashRing(settings.members)
        self._client = client
        self._lock = threading.Lock()
        self._budget = threading.BoundedSemaphore(settings.max_concurrency)
        self._pool: ThreadPoolExecutor | None = None
        self.retry = RetryPolicy.from_settings(settings)

    # -- client --------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return self.settings.endpoint_url or f"https://lambda.{self.settings.region}.amazonaws.com"

    def client(self):
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self):
        import boto3
        from botocore.config import Config

        s = self.settings
        config = Config(read_timeout=s.function_timeout + READ_TIMEOUT_MARGIN_S, connect_timeout=10,
                        max_pool_connections=max(10, s.max_concurrency),
                        retries={"mode": "standard", "total_max_attempts": 1})  # retries: ours (retry.py)
        session = boto3.session.Session()
        kwargs = {}
        if session.get_credentials() is None:  # same account as the data: the S3 keys, if given
            if self.s3.access_key_id and self.s3.secret_access_key:
                kwargs = {"aws_access_key_id": self.s3.access_key_id.value,
                          "aws_secret_access_key": self.s3.secret_access_key.value,
                          "aws_session_token": self.s3.session_token.value if self.s3.session_token else None}
            elif s.endpoint_url:  # a local service checks no signature
                kwargs = {"aws_access_key_id": "puffin-local", "aws_secret_access_key": "puffin-local"}
        return session.client("lambda", region_name=s.region, endpoint_url=s.endpoint_url, config=config, **kwargs)

    # -- fragments -----------------------------------------------------------------------------
    def submit(self, fragment, query_id: str, attempt: int = 0, mode: str | None = None,
               stop: threading.Event | None = None) -> Future:
        return self.call_async(self.invoke, fragment, query_id, attempt, mode, stop)

    def call_async(self, fn, *args) -> Future:
        """Run ``fn(*args)`` on the invoker's pool (``max_concurrency`` threads)."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.settings.max_concurrency, thread_name_prefix="puffin-lambda")
            return self._pool.submit(fn, *args)

    def invoke(self, fragment, query_id: str, attempt: int = 0, mode: str | None = None,
               stop: threading.Event | None = None):
        """Run ``fragment`` (a scan fragment) on its group member; ``(parts, metrics, info)``.
        Retryable failures are invoked again (same request: the handler is idempotent) until
        the retry policy gives up; ``stop`` set (the query ended) ends a backoff early."""
        mode = mode or self.settings.mode
        name, qualifier = self.ring.route(fragment)
        label = f"{name}:{qualifier}" if qualifier else name
        ok, why = offloadable(fragment)
        if not ok:
            raise LambdaUnavailable("unsupported", label, f"fragment {fragment.stage_id}.{fragment.task} {why}")
        if mode == "event" and not self.settings.results_url:
            raise LambdaUnavailable("function_error", label, "event mode needs results_url (an S3 prefix)")
        event = wire.fragment_request(self._prepare(fragment), query_id, attempt, "s3" if mode == "event" else "sync",
                                      self._results())
        body = json.dumps(event).encode()
        info = InvokeInfo(name, qualifier, mode, request_bytes=len(body))
        key = None
        if mode == "event":
            key = wire.result_key(wire.split_url(self.settings.results_url)[1], query_id, fragment.stage_id,
                                  fragment.task, attempt)

        def once():
            with self._budget:
                if mode == "event":
                    self._call(name, qualifier, body, "Event", info, label)
                    response = self._poll(key, label, stop)
                else:
                    response = self._call(name, qualifier, body, "RequestResponse", info, label)
            return self._decode(response, fragment, label, info)

        start = time.perf_counter()
        tries = Attempts()
        try:
            parts, metrics = run_with_retries(self.retry, once, tries, stop,
                                              before_retry=(lambda _: self._forget(key)) if key else None)
        finally:
            info.retried, info.retries = dict(tries.retried), tries.retries
            info.backoff_ms = round(tries.backoff_s * 1000, 3)
        info.wall_ms = round((time.perf_counter() - start) * 1000, 3)
        return parts, metrics, info

    def _prepare(self, fragment):
        """The fragment as sent: without the driver's secrets unless ``forward_credentials``."""
        if self.settings.forward_credentials:
            return fragment
        scans = []
        for read in fragment.scans:
            changes = {}
            if read.storage is not None:
                changes["storage"] = dataclasses.replace(read.storage, access_key_id=None, secret_access_key=None,
                                                         session_token=None, profile=None)
            if read.extra is not None and hasattr(read.extra, "io_properties"):
                props = {k: v for k, v in read.extra.io_properties.items() if k not in _CRED_KEYS}
                changes["extra"] = dataclasses.replace(read.extra, io_properties=props)
            scans.append(dataclasses.replace(read, **changes) if changes else read)
        return dataclasses.replace(fragment, scans=tuple(scans))

    def _results(self) -> dict | None:
        if not self.settings.results_url:
            return None
        return {"url": self.settings.results_url, "s3": wire.s3_to_dict(self.s3, self.settings.forward_credentials)}

    def _call(self, name, qualifier, body: bytes, kind: str, info: InvokeInfo, label: str) -> dict | None:
        from botocore.exceptions import BotoCoreError, ClientError

        kwargs = {"FunctionName": name, "InvocationType": kind, "Payload": body}
        if qualifier:
            kwargs["Qualifier"] = qualifier
        if kind == "RequestResponse":
            kwargs["LogType"] = "Tail"
        try:
            out = self.client().invoke(**kwargs)
        except ClientError as e:
            raise from_client_error(e, label) from None
        except BotoCoreError as e:
            raise from_botocore_error(e, label, self.endpoint) from None
        if kind == "Event":
            return None
        raw = out["Payload"].read()
        info.init_ms = _init_duration(out.get("LogResult"))
        if out.get("FunctionError"):
            raise from_function_error(out["FunctionError"], raw, label)
        try:
            return json.loads(raw)
        except ValueError:
            raise LambdaUnavailable("bad_response", label, f"not JSON: {raw[:200]!r}") from None

    def _poll(self, key: str, label: str, stop: threading.Event | None = None) -> dict:
        bucket, _ = wire.split_url(self.settings.results_url)
        fs = s3_filesystem(self.s3)
        deadline = time.monotonic() + self.settings.function_timeout + READ_TIMEOUT_MARGIN_S
        wait = 0.02
        while time.monotonic() < deadline:
            try:
                with fs.open_input_stream(f"{bucket}/{key}/done.json") as f:
                    return json.loads(f.read())
            except (FileNotFoundError, OSError):
                if stop is not None and stop.is_set():
                    raise LambdaUnavailable("cancelled", label, "the query ended while polling") from None
                time.sleep(wait)
                wait = min(wait * 1.5, 1.0)
        raise LambdaUnavailable("timeout", label, f"no completion marker at s3://{bucket}/{key}/done.json within "
                                f"{self.settings.function_timeout + READ_TIMEOUT_MARGIN_S:g}s of an Event invocation")

    def _decode(self, response: dict, fragment, label: str, info: InvokeInfo):
        if not isinstance(response, dict) or response.get("puffin") != wire.VERSION:
            raise LambdaUnavailable("bad_response", label, f"not a Puffin v{wire.VERSION} response")
        info.cold = bool(response.get("cold"))
        info.instance = response.get("instance", "")
        info.request_id = response.get("request_id") or info.request_id
        info.handler_ms = response.get("handler_ms", 0.0)
        info.replayed = bool(response.get("replayed"))
        if not response.get("ok"):
            err = response.get("error", {})
            if err.get("user"):
                raise LambdaQueryError(f"stage {fragment.stage_id} task {fragment.task} failed: {err.get('message')}",
                                       fragment.stage_id)
            reason = "transient" if err.get("type") == FunctionTransientError.__name__ else "function_error"
            raise LambdaUnavailable(reason, label, f"{err.get('type')}: {err.get('message')}")
        cache = response.get("cache", {})
        info.cache_hits, info.cache_misses = cache.get("hits", 0), cache.get("misses", 0)
        info.cache_hit_bytes, info.cache_miss_bytes = cache.get("hit_bytes", 0), cache.get("miss_bytes", 0)
        info.cache_bypassed = cache.get("bypassed", 0)
        info.result_bytes = response.get("result_bytes", 0)
        if "inline" in response:
            parts = [wire.read_ipc(base64.b64decode(b)) for b in response["inline"]]
        else:
            info.via = "s3"
            parts = self._fetch(response["object"], label)
        metrics = wire.metrics_from_dict(response["metrics"])
        return parts, metrics

    def _fetch(self, obj: dict, label: str) -> list[pa.Table]:
        url, offsets = obj["url"], obj["offsets"]
        try:
            with s3_filesystem(self.s3).open_input_file(url[5:]) as f:
                data = f.read()
        except OSError as e:
            raise LambdaUnavailable("result_lost", label, f"cannot read the result {url}: {e}") from None
        view = memoryview(data)
        return [wire.read_ipc(view[a:b]) for a, b in itertools.pairwise(offsets)]

    def _forget(self, key: str) -> None:
        """Delete a failed Event attempt's completion marker, so the retry's own is the one polled."""
        bucket, _ = wire.split_url(self.settings.results_url)
        try:
            s3_filesystem(self.s3).delete_file(f"{bucket}/{key}/done.json")
        except (FileNotFoundError, OSError):
            pass

    # -- catalog -------------------------------------------------------------------------------
    def plan_iceberg(self, catalog: str, config: dict, table: str, row_filter=None, snapshot_id: int | None = None,
                     query_id: str = "catalog", stop: threading.Event | None = None):
        """Iceberg scan planning on the Catalog function: ``(units, files, info)``; ``units`` are
        what ``puffin.iceberg.IcebergTable.plan`` returns. Retried as fragments are; without
        ``forward_credentials`` the S3 keys in ``config`` stay here (the function has its role)."""
        fn = self.settings.catalog_function
        if not fn:
            raise LambdaUnavailable("not_found", "(none)", "no catalog_function is configured")
        if not self.settings.forward_credentials:
            config = {k: v for k, v in config.items() if k not in _CRED_KEYS}
        event = {"puffin": wire.VERSION, "kind": "catalog", "catalog": catalog, "config": config, "table": table,
                 "snapshot_id": snapshot_id, "filter": wire.pack_object(row_filter) if row_filter is not None else None,
                 "s3": wire.s3_to_dict(self.s3, self.settings.forward_credentials), "query_id": query_id,
                 "results": self._results()}
        name, _, qualifier = fn.partition(":") if not fn.startswith("arn:") else (fn, "", "")
        body = json.dumps(event).encode()
        info = InvokeInfo(name, qualifier or None, "sync", request_bytes=len(body))

        def once():
            with self._budget:
                return self._call(name, qualifier or None, body, "RequestResponse", info, fn)

        start = time.perf_counter()
        tries = Attempts()
        try:
            out = run_with_retries(self.retry, once, tries, stop)
        finally:
            info.retried, info.retries = dict(tries.retried), tries.retries
            info.backoff_ms = round(tries.backoff_s * 1000, 3)
        if not isinstance(out, dict) or out.get("puffin") != wire.VERSION or not out.get("ok"):
            raise LambdaUnavailable("bad_response", fn, f"not a Puffin v{wire.VERSION} catalog response")
        if "object" in out:
            with s3_filesystem(self.s3).open_input_stream(out["object"]["url"][5:]) as f:
                out = json.loads(f.read())
        info.cold, info.instance = bool(out.get("cold")), out.get("instance", "")
        info.handler_ms = out.get("handler_ms", 0.0)
        info.wall_ms = round((time.perf_counter() - start) * 1000, 3)
        return wire.unpack_object(out["units"]), out["files"], info

    def cleanup(self, query_id: str) -> None:
        """Delete a query's large results and markers (call once the query is done)."""
        if not self.settings.results_url:
            return
        bucket, prefix = wire.split_url(self.settings.results_url)
        path = f"{bucket}/{wire.result_key(prefix, query_id, 0, 0, 0).rsplit('/', 3)[0]}"
        try:
            s3_filesystem(self.s3).delete_dir(path)
        except (FileNotFoundError, OSError):
            pass

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _init_duration(log_result: str | None) -> float | None:
    if not log_result:
        return None
    text = base64.b64decode(log_result).decode(errors="replace")
    marker = "Init Duration: "
    i = text.rfind(marker)
    if i < 0:
        return None
    try:
        return float(text[i + len(marker):].split()[0])
    except (ValueError, IndexError):
        return None
