"""The local Lambda service's core: functions, warm worker pools, limits and injected faults.

``Service.invoke`` is one synchronous invocation answered as the Invoke API answers it (status,
headers, body); ``submit_event`` queues an Event invocation. The HTTP front is ``local.py``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field

from puffin.lambda_bridge.payload import ASYNC_LIMIT, SYNC_LIMIT
from puffin.lambda_bridge.worker import Worker, WorkerDied

DEFAULT_FUNCTIONS = {"puffin-engine": "puffin.lambda_bridge.handler.handler",
                     "puffin-catalog": "puffin.lambda_bridge.handler.catalog_handler"}
FAULTS = ("throttle", "deny", "timeout", "crash", "error", "service", "transient")


@dataclass
class Function:
    name: str
    handler: str
    timeout: float = 60.0
    memory_mb: int = 2048
    concurrency: int | None = None  # reserved concurrency; None: the service's limit
    retry_after: float | None = None  # seconds a 429 asks the caller to wait (Retry-After), as AWS may
    faults: dict = field(default_factory=lambda: dict.fromkeys(FAULTS, 0))
    in_flight: int = 0


class Service:
    """Functions, their warm worker pools, the concurrency limit and the fault counters."""

    def __init__(self, functions: dict[str, Function], concurrency: int = 8, region: str = "us-east-1",
                 sync_limit: int = SYNC_LIMIT, async_limit: int = ASYNC_LIMIT, idle_s: float = 600.0):
        self.functions = functions
        self.concurrency = concurrency
        self.region = region
        self.sync_limit, self.async_limit, self.idle_s = sync_limit, async_limit, idle_s
        self.lock = threading.Lock()
        self.idle: dict[tuple[str, str | None], list[Worker]] = {}
        self.in_flight = 0
        self.stats = {"invocations": 0, "cold": 0, "warm": 0, "throttled": 0, "timeouts": 0, "crashes": 0,
                      "errors": 0, "events": 0, "service_errors": 0, "peak_requests": 0}
        self.requests = 0  # synchronous invocation requests being answered now
        self.events: queue.Queue = queue.Queue()
        for _ in range(max(2, concurrency)):
            threading.Thread(target=self._event_loop, daemon=True).start()

    # -- invocations ---------------------------------------------------------------------------
    def _fault(self, fn: Function) -> str | None:
        for kind in FAULTS:
            if fn.faults.get(kind, 0) > 0:
                fn.faults[kind] -= 1
                return kind
        return None

    def _acquire(self, fn: Function, qualifier: str | None) -> tuple[Worker | None, bool]:
        """A warm worker (most recently used first) or a new one; None if over the limit."""
        with self.lock:
            limit = fn.concurrency if fn.concurrency is not None else self.concurrency
            if self.in_flight >= self.concurrency or fn.in_flight >= limit:
                self.stats["throttled"] += 1
                return None, False
            self.in_flight += 1
            fn.in_flight += 1
            pool = self.idle.setdefault((fn.name, qualifier), [])
            while pool:
                w = pool.pop()
                if w.alive():
                    return w, False
        env = {"AWS_LAMBDA_FUNCTION_NAME": fn.name, "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
               "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_mb), "AWS_REGION": self.region,
               "AWS_DEFAULT_REGION": self.region, "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11_puffin_local"}
        return Worker(fn.name, fn.handler, env, fn.memory_mb, qualifier), True

    def _release(self, fn: Function, qualifier: str | None, worker: Worker, keep: bool) -> None:
        with self.lock:
            self.in_flight -= 1
            fn.in_flight -= 1
            if keep and worker.alive():
                self.idle.setdefault((fn.name, qualifier), []).append(worker)
                return
        worker.kill()

    def invoke(self, fn: Function, qualifier: str | None, body: bytes) -> tuple[int, dict, bytes]:
        """One synchronous invocation: (status, headers, body) as the Invoke API answers."""
        rid = str(uuid.uuid4())
        fault = self._fault(fn)
        if fault == "throttle":
            self.stats["throttled"] += 1
            return self._throttled(fn, rid, "ReservedFunctionConcurrentInvocationLimitExceeded")
        if fault == "service":
            self.stats["service_errors"] += 1
            return error(500, "ServiceException", "The AWS Lambda service encountered an internal error.", rid)
        if fault == "deny":
            arn = f"arn:aws:lambda:{self.region}:000000000000:function:{fn.name}"
            return error(403, "AccessDeniedException", f"User: arn:aws:iam::000000000000:user/puffin is not "
                          f"authorized to perform: lambda:InvokeFunction on resource: {arn}", rid)
        worker, cold = self._acquire(fn, qualifier)
        if worker is None:
            return self._throttled(fn, rid, "ConcurrentInvocationLimitExceeded")
        self.stats["invocations"] += 1
        self.stats["cold" if cold else "warm"] += 1
        keep, logs, error_kind = True, "", None
        start = time.perf_counter()
        try:
            init_error = worker.wait_ready(10.0) if cold else None
            start = time.perf_counter()
            if init_error is not None:
                keep, error_kind, out = False, "Unhandled", json.dumps(init_error).encode()
            else:
                result = worker.run(rid, body, fn.timeout, "hang" if fault == "timeout" else fault)
                if result is None:
                    self.stats["timeouts"] += 1
                    keep, error_kind = False, "Unhandled"
                    out = json.dumps({"errorType": "Sandbox.Timedout", "errorMessage":
                                      f"{_now()} {rid} Task timed out after {fn.timeout:.2f} seconds"}).encode()
                else:
                    kind, out, logs = result
                    if kind == "error":
                        self.stats["errors"] += 1
                        error_kind = "Unhandled"
        except WorkerDied as e:
            self.stats["crashes"] += 1
            keep, error_kind = False, "Unhandled"
            out = json.dumps({"errorType": "Runtime.ExitError", "errorMessage":
                              f"RequestId: {rid} Error: Runtime exited with error: exit status {e.args[0]}"}).encode()
        finally:
            self._release(fn, qualifier, worker, keep)
        ms = (time.perf_counter() - start) * 1000
        if error_kind is None and len(out) > self.sync_limit:
            error_kind = "Unhandled"
            out = json.dumps({"errorType": "Function.ResponseSizeTooLarge", "errorMessage":
                              f"Response payload size exceeded maximum allowed payload size ({self.sync_limit} bytes)."}).encode()
        report = f"REPORT RequestId: {rid}\tDuration: {ms:.2f} ms\tBilled Duration: {int(ms) + 1} ms\t" \
                 f"Memory Size: {fn.memory_mb} MB"
        if cold and worker.init_ms is not None:
            report += f"\tInit Duration: {worker.init_ms:.2f} ms"
        tail = f"START RequestId: {rid} Version: $LATEST\n{logs}END RequestId: {rid}\n{report}\n"
        headers = {"X-Amz-Executed-Version": "$LATEST", "x-amzn-RequestId": rid, "X-Puffin-Cold": str(cold).lower(),
                   "X-Puffin-Instance": str(worker.pid),
                   "X-Amz-Log-Result": base64.b64encode(tail.encode()[-4096:]).decode()}
        if error_kind:
            headers["X-Amz-Function-Error"] = error_kind
        return 200, headers, out

    @staticmethod
    def _throttled(fn: Function, rid: str, reason: str) -> tuple[int, dict, bytes]:
        status, headers, body = error(429, "TooManyRequestsException", "Rate Exceeded.", rid, Reason=reason)
        if fn.retry_after is not None:
            headers["Retry-After"] = f"{fn.retry_after:g}"
        return status, headers, body

    @contextlib.contextmanager
    def request(self):
        """One synchronous Invoke request being answered (``peak_requests``: the most at once)."""
        with self.lock:
            self.requests += 1
            self.stats["peak_requests"] = max(self.stats["peak_requests"], self.requests)
        try:
            yield
        finally:
            with self.lock:
                self.requests -= 1

    def submit_event(self, fn: Function, qualifier: str | None, body: bytes) -> None:
        self.stats["events"] += 1
        self.events.put((fn, qualifier, body, 0))

    def _event_loop(self) -> None:
        while True:
            fn, qualifier, body, tries = self.events.get()
            status, headers, _ = self.invoke(fn, qualifier, body)
            if status == 429 or status >= 500:  # throttled or a system error: Lambda keeps the event, tries again
                time.sleep(0.2)
                self.events.put((fn, qualifier, body, tries))
            elif headers.get("X-Amz-Function-Error") and tries < 2:  # two retries on a function error
                time.sleep(0.5)
                self.events.put((fn, qualifier, body, tries + 1))

    def reset(self) -> None:
        with self.lock:
            pools, self.idle = self.idle, {}
        for pool in pools.values():
            for w in pool:
                w.stop()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def error(status: int, code: str, message: str, rid: str, **extra) -> tuple[int, dict, bytes]:
    body = json.dumps({"Type": "User", "message": message, **extra}).encode()
    return status, {"x-amzn-ErrorType": code, "x-amzn-RequestId": rid}, body
