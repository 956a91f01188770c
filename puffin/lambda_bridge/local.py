"""A local AWS Lambda service speaking the real Invoke API, for development and tests.

    python -m puffin.lambda_bridge.local --port 9001
    export AWS_ENDPOINT_URL_LAMBDA=http://127.0.0.1:9001

serves ``puffin-engine`` and ``puffin-catalog`` (``--function name=module.attr`` adds others).
``POST /2015-03-31/functions/{name}/invocations`` (``?Qualifier=``) runs the handler in a separate
worker process that stays warm between invocations (each (function, qualifier) has its own warm
pool, so consistent routing keeps caches warm); RequestResponse and Event invocations; limits as
on AWS: 6 MB synchronous and 256 KB (``--async-limit``) asynchronous request payloads
(413 ``RequestTooLargeException``), a 6 MB response (``Function.ResponseSizeTooLarge``), a
timeout (the worker is killed, ``Sandbox.Timedout``), a concurrency limit answered with 429
``TooManyRequestsException``; ``X-Amz-Function-Error: Unhandled`` with Lambda's error JSON for a
raise or a crash. Cold and warm starts show in the ``LogType=Tail`` log (``Init Duration`` on
cold starts) and in the ``X-Puffin-Cold``/``X-Puffin-Instance`` headers. Event invocations
queue when the service is busy and are retried twice on a function error, as on AWS.

Control endpoints (not AWS): ``POST /_puffin/faults`` ``{"function": f, "throttle": n,
"deny": n, "timeout": n, "crash": n, "error": n}`` makes f's next n invocations fail that way (also from
``PUFFIN_LOCAL_LAMBDA_FAULTS`` as ``{f: {...}}``); ``POST /_puffin/config`` ``{"function": f,
"timeout": s, "concurrency": n}``; ``GET /_puffin/stats``; ``POST /_puffin/reset`` (all cold).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import queue
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

from puffin.lambda_bridge.payload import ASYNC_LIMIT, SYNC_LIMIT
from puffin.lambda_bridge.worker import Worker, WorkerDied

DEFAULT_FUNCTIONS = {"puffin-engine": "puffin.lambda_bridge.handler.handler",
                     "puffin-catalog": "puffin.lambda_bridge.handler.catalog_handler"}
FAULTS = ("throttle", "deny", "timeout", "crash", "error")


@dataclass
class Function:
    name: str
    handler: str
    timeout: float = 60.0
    memory_mb: int = 2048
    concurrency: int | None = None  # reserved concurrency; None: the service's limit
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
                      "errors": 0, "events": 0}
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
            return _error(429, "TooManyRequestsException", "Rate Exceeded.", rid,
                          Reason="ReservedFunctionConcurrentInvocationLimitExceeded")
        if fault == "deny":
            arn = f"arn:aws:lambda:{self.region}:000000000000:function:{fn.name}"
            return _error(403, "AccessDeniedException", f"User: arn:aws:iam::000000000000:user/puffin is not "
                          f"authorized to perform: lambda:InvokeFunction on resource: {arn}", rid)
        worker, cold = self._acquire(fn, qualifier)
        if worker is None:
            return _error(429, "TooManyRequestsException", "Rate Exceeded.", rid, Reason="ConcurrentInvocationLimitExceeded")
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

    def submit_event(self, fn: Function, qualifier: str | None, body: bytes) -> None:
        self.stats["events"] += 1
        self.events.put((fn, qualifier, body, 0))

    def _event_loop(self) -> None:
        while True:
            fn, qualifier, body, tries = self.events.get()
            status, headers, _ = self.invoke(fn, qualifier, body)
            if status == 429:  # throttled: Lambda keeps the event and tries again
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


def _error(status: int, code: str, message: str, rid: str, **extra) -> tuple[int, dict, bytes]:
    body = json.dumps({"Type": "User", "message": message, **extra}).encode()
    return status, {"x-amzn-ErrorType": code, "x-amzn-RequestId": rid}, body


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    service: Service

    def log_message(self, fmt, *args):  # quiet; --verbose turns it back on
        if getattr(self.server, "verbose", False):
            super().log_message(fmt, *args)

    def _send(self, status: int, headers: dict, body: bytes) -> None:
        self.send_response(status)
        headers = {"Content-Type": "application/json", **headers}
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        path = urlparse(self.path).path
        if path == "/_puffin/stats":
            svc = self.service
            idle = {f"{k[0]}:{k[1] or '$LATEST'}": len(v) for k, v in svc.idle.items()}
            return self._send(200, {}, json.dumps({**svc.stats, "in_flight": svc.in_flight, "idle": idle}).encode())
        if path == "/_puffin/health":
            return self._send(200, {}, b'{"ok": true}')
        self._send(404, {"x-amzn-ErrorType": "UnknownOperationException"}, b'{"message": "not served here"}')

    def do_POST(self):
        url = urlparse(self.path)
        body = self._body()
        svc = self.service
        if url.path.startswith("/_puffin/"):
            return self._control(url.path, json.loads(body or b"{}"))
        parts = url.path.split("/")
        if len(parts) != 5 or parts[1] != "2015-03-31" or parts[2] != "functions" or parts[4] != "invocations":
            return self._send(404, {"x-amzn-ErrorType": "UnknownOperationException"}, b'{"message": "unknown path"}')
        name, qualifier = _function_name(unquote(parts[3]), parse_qs(url.query).get("Qualifier", [None])[0])
        rid = str(uuid.uuid4())
        fn = svc.functions.get(name)
        if fn is None:
            arn = f"arn:aws:lambda:{svc.region}:000000000000:function:{name}"
            return self._send(*_error(404, "ResourceNotFoundException", f"Function not found: {arn}", rid))
        kind = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        limit = svc.async_limit if kind == "Event" else svc.sync_limit
        if len(body) > limit:
            op = "Invoke" if kind != "Event" else "InvokeAsync"
            return self._send(*_error(413, "RequestTooLargeException",
                                      f"{len(body)} byte payload is too large for the {op} operation ({limit} bytes)", rid))
        if kind == "DryRun":
            return self._send(204, {"x-amzn-RequestId": rid}, b"")
        if kind == "Event":
            svc.submit_event(fn, qualifier, body)
            return self._send(202, {"x-amzn-RequestId": rid}, b"")
        status, headers, out = svc.invoke(fn, qualifier, body)
        if self.headers.get("X-Amz-Log-Type") != "Tail":
            headers.pop("X-Amz-Log-Result", None)
        self._send(status, headers, out)

    def _control(self, path: str, doc: dict) -> None:
        svc = self.service
        if path == "/_puffin/reset":
            svc.reset()
            return self._send(200, {}, b'{"ok": true}')
        fn = svc.functions.get(doc.get("function", "puffin-engine"))
        if fn is None:
            return self._send(404, {}, b'{"message": "no such function"}')
        if path == "/_puffin/faults":
            for kind in FAULTS:
                fn.faults[kind] = int(doc.get(kind, fn.faults[kind]))
            return self._send(200, {}, json.dumps(fn.faults).encode())
        if path == "/_puffin/config":
            fn.timeout = float(doc.get("timeout", fn.timeout))
            if "concurrency" in doc:
                fn.concurrency = doc["concurrency"]
            return self._send(200, {}, json.dumps({"timeout": fn.timeout, "concurrency": fn.concurrency}).encode())
        self._send(404, {}, b'{"message": "unknown control path"}')


def _function_name(raw: str, qualifier: str | None) -> tuple[str, str | None]:
    """A name, ``name:qualifier``, or an ARN (partial or full) -> (name, qualifier)."""
    if raw.startswith("arn:"):
        bits = raw.split(":")
        return bits[6], (bits[7] if len(bits) > 7 else qualifier)
    name, _, q = raw.partition(":")
    q = q or qualifier
    return name, (None if q in (None, "", "$LATEST") else q)


def serve(host: str, port: int, service: Service, verbose: bool = False) -> ThreadingHTTPServer:
    handler = type("Handler", (_Handler,), {"service": service})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    server.verbose = verbose
    return server


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m puffin.lambda_bridge.local", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9001)
    p.add_argument("--concurrency", type=int, default=max(2, os.cpu_count() or 2) * 2)
    p.add_argument("--timeout", type=float, default=60.0, help="function timeout, seconds")
    p.add_argument("--memory", type=int, default=2048, help="reported memory size, MB")
    p.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    p.add_argument("--async-limit", type=int, default=ASYNC_LIMIT)
    p.add_argument("--function", action="append", default=[], metavar="NAME=MODULE.ATTR")
    p.add_argument("--verbose", action="store_true")
    a = p.parse_args(argv)
    specs = dict(DEFAULT_FUNCTIONS)
    specs.update(dict(f.split("=", 1) for f in a.function))
    functions = {n: Function(n, h, a.timeout, a.memory) for n, h in specs.items()}
    for name, faults in json.loads(os.environ.get("PUFFIN_LOCAL_LAMBDA_FAULTS") or "{}").items():
        functions[name].faults.update({k: int(v) for k, v in faults.items() if k in FAULTS})
    service = Service(functions, a.concurrency, a.region, async_limit=a.async_limit)
    server = serve(a.host, a.port, service, a.verbose)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"puffin local lambda listening on http://{a.host}:{server.server_address[1]} "
          f"functions={','.join(functions)} concurrency={a.concurrency}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        service.reset()
        server.server_close()
        sys.stdout.flush()


if __name__ == "__main__":
    main()
