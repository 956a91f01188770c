"""One execution environment of the local Lambda service: a separate, reusable process.

The process imports the handler once (the cold start: its init time is reported like Lambda's
``Init Duration``) and then runs invocations one at a time for as long as the service keeps it,
so module-level state (DuckDB, the warm-partition cache) survives between them, as on Lambda.
``Worker`` is the service's handle on it. Fault injection reaches the process as an instruction
with the invocation: ``crash`` exits the process mid-invocation, ``hang`` sleeps past any timeout,
``error`` raises in the handler, ``transient`` raises the handler's ``FunctionTransientError`` (as
the Engine function does when an S3 read breaks).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import multiprocessing
import os
import time
import traceback
from dataclasses import dataclass

_CTX = multiprocessing.get_context("spawn")


@dataclass
class Context:
    """The parts of Lambda's context object handlers use."""

    aws_request_id: str
    function_name: str
    function_version: str
    memory_limit_in_mb: int
    deadline: float  # time.time() when the invocation times out
    invoked_function_arn: str = ""
    log_group_name: str = ""
    log_stream_name: str = ""

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.time()) * 1000))


def worker_main(conn, function: str, handler_path: str, env: dict, memory_mb: int) -> None:
    os.environ.update(env)
    start = time.perf_counter()
    try:
        module, _, attr = handler_path.rpartition(".")
        fn = getattr(importlib.import_module(module), attr)
    except Exception as e:  # noqa: BLE001 - reported as Runtime.ImportModuleError, like Lambda
        conn.send(("init_error", {"errorType": "Runtime.ImportModuleError",
                                  "errorMessage": f"Unable to import module '{handler_path}': {e}"}))
        return
    conn.send(("ready", (time.perf_counter() - start) * 1000))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        request_id, body, deadline, fault = msg
        if fault == "crash":
            os._exit(3)
        if fault == "hang":
            time.sleep(10 ** 6)
        logs = io.StringIO()
        ctx = Context(request_id, function, "$LATEST", memory_mb, deadline,
                      f"arn:aws:lambda:{env.get('AWS_REGION', 'us-east-1')}:000000000000:function:{function}")
        try:
            with contextlib.redirect_stdout(logs), contextlib.redirect_stderr(logs):
                if fault == "error":
                    raise RuntimeError("injected fault: the handler raised")
                if fault == "transient":
                    from puffin.lambda_bridge.errors import FunctionTransientError

                    raise FunctionTransientError("injected fault: OSError: the S3 read was reset by the peer")
                result = fn(json.loads(body or b"null"), ctx)
            conn.send(("ok", json.dumps(result).encode(), logs.getvalue()))
        except Exception as e:  # noqa: BLE001 - an unhandled handler error, shaped as Lambda's
            tb = traceback.format_exception(type(e), e, e.__traceback__)
            doc = {"errorMessage": str(e), "errorType": type(e).__name__, "requestId": request_id,
                   "stackTrace": [line.rstrip() for line in tb[1:]][-20:]}
            logs.write("".join(tb))
            conn.send(("error", json.dumps(doc).encode(), logs.getvalue()))


class WorkerDied(Exception):
    """The worker process exited during an invocation."""


class Worker:
    """The service's handle on one worker process (not thread-safe: one invocation at a time)."""

    def __init__(self, function: str, handler_path: str, env: dict, memory_mb: int, qualifier: str | None):
        self.function = function
        self.qualifier = qualifier
        self.invocations = 0
        self.last_used = time.monotonic()
        self.init_ms: float | None = None
        self._created = time.perf_counter()
        parent, child = _CTX.Pipe()
        self.conn = parent
        self.proc = _CTX.Process(target=worker_main, args=(child, function, handler_path, env, memory_mb),
                                 daemon=True, name=f"lambda-{function}")
        self.proc.start()
        child.close()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float) -> dict | None:
        """Block until imported; the init error document when the import failed."""
        if not self.conn.poll(timeout):
            self.kill()
            return {"errorType": "Runtime.InitTimeout", "errorMessage": f"init did not finish in {timeout:g}s"}
        try:
            kind, value = self.conn.recv()
        except EOFError:
            return {"errorType": "Runtime.ExitError", "errorMessage": "Runtime exited during init"}
        if kind != "ready":
            self.kill()
            return value
        self.init_ms = (time.perf_counter() - self._created) * 1000  # process start + import, as Lambda's
        return None

    def run(self, request_id: str, body: bytes, timeout: float, fault: str | None):
        """("ok" | "error", body bytes, logs); None on timeout (the worker is then killed);
        raises WorkerDied when the process exits."""
        self.invocations += 1
        try:
            self.conn.send((request_id, body, time.time() + timeout, fault))
            if not self.conn.poll(timeout):
                self.kill()
                return None
            result = self.conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            self.proc.join(5)
            raise WorkerDied(self.proc.exitcode) from None
        self.last_used = time.monotonic()
        return result

    def alive(self) -> bool:
        return self.proc.is_alive()

    def stop(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self.conn.send(None)
        self.proc.join(2)
        self.kill()

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        with contextlib.suppress(OSError):
            self.conn.close()
