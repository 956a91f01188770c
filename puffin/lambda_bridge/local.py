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
``TooManyRequestsException``, a request signed for another region than ``--region`` answered
403 ``InvalidSignatureException`` as a regional endpoint does; ``X-Amz-Function-Error: Unhandled`` with Lambda's error JSON for a
raise or a crash. Cold and warm starts show in the ``LogType=Tail`` log (``Init Duration`` on
cold starts) and in the ``X-Puffin-Cold``/``X-Puffin-Instance`` headers. Event invocations
queue when the service is busy and are retried twice on a function error, as on AWS.

Control endpoints (not AWS): ``POST /_puffin/faults`` ``{"function": f, "throttle": n,
"deny": n, "timeout": n, "crash": n, "error": n, "service": n, "transient": n}`` makes f's next n
invocations fail that way (429, 403, a timeout, an exit, a raise, a 500 ``ServiceException``, a
``FunctionTransientError`` raised in the handler; also from ``PUFFIN_LOCAL_LAMBDA_FAULTS`` as
``{f: {...}}``); ``POST /_puffin/config`` ``{"function": f, "timeout": s, "concurrency": n,
"retry_after": s}`` (``retry_after``: the ``Retry-After`` header of f's 429s);
``GET /_puffin/stats`` (``POST`` zeroes them; ``peak_requests``: the most synchronous
requests answered at once); ``POST /_puffin/reset`` (all cold).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

from puffin.lambda_bridge.payload import ASYNC_LIMIT
from puffin.lambda_bridge.service import DEFAULT_FUNCTIONS, FAULTS, Function, Service, error


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
        signed = _signed_region(self.headers.get("Authorization", ""))
        if signed is not None and signed != svc.region:  # as a regional AWS endpoint answers
            return self._send(*error(403, "InvalidSignatureException",
                                     f"Credential should be scoped to a valid region, not '{signed}'.", rid))
        fn = svc.functions.get(name)
        if fn is None:
            arn = f"arn:aws:lambda:{svc.region}:000000000000:function:{name}"
            return self._send(*error(404, "ResourceNotFoundException", f"Function not found: {arn}", rid))
        kind = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        limit = svc.async_limit if kind == "Event" else svc.sync_limit
        if len(body) > limit:
            op = "Invoke" if kind != "Event" else "InvokeAsync"
            return self._send(*error(413, "RequestTooLargeException",
                                      f"{len(body)} byte payload is too large for the {op} operation ({limit} bytes)", rid))
        if kind == "DryRun":
            return self._send(204, {"x-amzn-RequestId": rid}, b"")
        if kind == "Event":
            svc.submit_event(fn, qualifier, body)
            return self._send(202, {"x-amzn-RequestId": rid}, b"")
        with svc.request():
            status, headers, out = svc.invoke(fn, qualifier, body)
        if self.headers.get("X-Amz-Log-Type") != "Tail":
            headers.pop("X-Amz-Log-Result", None)
        self._send(status, headers, out)

    def _control(self, path: str, doc: dict) -> None:
        svc = self.service
        if path == "/_puffin/reset":
            svc.reset()
            return self._send(200, {}, b'{"ok": true}')
        if path == "/_puffin/stats":  # POST: zero the counters
            with svc.lock:
                before, svc.stats = dict(svc.stats), dict.fromkeys(svc.stats, 0)
            return self._send(200, {}, json.dumps(before).encode())
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
            if "retry_after" in doc:
                fn.retry_after = None if doc["retry_after"] is None else float(doc["retry_after"])
            return self._send(200, {}, json.dumps({"timeout": fn.timeout, "concurrency": fn.concurrency,
                                                   "retry_after": fn.retry_after}).encode())
        self._send(404, {}, b'{"message": "unknown control path"}')


def _signed_region(authorization: str) -> str | None:
    """The region a SigV4 ``Authorization`` header is scoped to (``Credential=AKID/date/REGION/...``)."""
    _, _, rest = authorization.partition("Credential=")
    parts = rest.split(",")[0].split("/")
    return parts[2] if len(parts) >= 4 else None


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
