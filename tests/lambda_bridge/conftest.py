"""Fixtures for the Lambda bridge: the local Invoke API service (a subprocess on a free port),
small Parquet tables on the S3 test server, and real fragments planned from SQL."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import puffin
from puffin.lambda_bridge import Invoker, LambdaSettings
from puffin.lambda_bridge.service import FAULTS

FUNCTION_TIMEOUT_S = 20


class LocalLambda:
    def __init__(self, proc: subprocess.Popen, endpoint: str):
        self.proc = proc
        self.endpoint = endpoint

    def control(self, path: str, doc: dict | None = None) -> dict:
        data = json.dumps(doc or {}).encode() if doc is not None or path != "stats" else None
        req = urllib.request.Request(f"{self.endpoint}/_puffin/{path}", data=data,
                                     method="GET" if data is None else "POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def stats(self) -> dict:
        return self.control("stats")


@pytest.fixture(scope="session")
def local_lambda(tmp_path_factory):
    log_path = tmp_path_factory.mktemp("lambda") / "service.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PUFFIN_"))}
    env["PUFFIN_LAMBDA_CACHE_DIR"] = str(log_path.parent / "cache")
    log = open(log_path, "w+b")  # noqa: SIM115 - the service writes it for its whole life
    proc = subprocess.Popen([sys.executable, "-m", "puffin.lambda_bridge.local", "--port", "0", "--concurrency", "4",
                             "--timeout", str(FUNCTION_TIMEOUT_S)], stdout=subprocess.PIPE, stderr=log, env=env)
    line = proc.stdout.readline().decode()
    if "listening on" not in line:
        proc.kill()
        log.seek(0)
        pytest.fail(f"local lambda did not start: {line}\n{log.read().decode(errors='replace')}")
    service = LocalLambda(proc, line.split("listening on ")[1].split()[0])
    # keep reading what the service and its workers print, so a full pipe never blocks them
    threading.Thread(target=lambda: [log.write(b) for b in proc.stdout], daemon=True).start()
    yield service
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def s3_options(s3_server) -> dict:
    return {"endpoint_url": s3_server.endpoint, "access_key_id": s3_server.access_key,
            "secret_access_key": s3_server.secret_key, "region": s3_server.region}


def put_parquet(s3_server, bucket: str, key: str, table: pa.Table, row_group_size: int | None = None) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=row_group_size)
    s3_server.client().put_object(Bucket=bucket, Key=key, Body=buf.getvalue())


def events_table(seed: int, n: int = 3000) -> pa.Table:
    ids = list(range(seed * n, (seed + 1) * n))
    return pa.table({"id": ids, "grp": [f"g{i % 7}" for i in ids], "v": [i * 0.5 for i in ids]})


@pytest.fixture(scope="session")
def events(s3_server, s3_bucket) -> str:
    """s3://BUCKET/lambda/events: two Parquet files of three row groups each."""
    for k in range(2):
        put_parquet(s3_server, s3_bucket, f"lambda/events/part-{k}.parquet", events_table(k), row_group_size=1000)
    return f"s3://{s3_bucket}/lambda/events"


@pytest.fixture(scope="session")
def big(s3_server, s3_bucket) -> str:
    """One file whose scan result compresses to more than the 6 MB inline limit allows."""
    n = 150_000
    rnd = base64.b64encode(os.urandom(48 * n)).decode()
    t = pa.table({"id": list(range(n)), "s": [rnd[i * 64:(i + 1) * 64] for i in range(n)]})
    put_parquet(s3_server, s3_bucket, "lambda/big/big.parquet", t)
    return f"s3://{s3_bucket}/lambda/big"


@pytest.fixture(scope="session")
def con(s3_server, events, big):
    c = puffin.connect(target_partitions=2, s3=s3_options(s3_server), prestart=False)  # planning only: no Ray
    c.register("events", events)
    c.register("big", big)
    return c


def fragments(con, sql: str, cpus: int = 2):
    """The fragments of every stage of ``sql`` as the driver plans them (no Ray needed)."""
    planned = con._plan(sql, "duckdb", cpus, None)
    return planned.fragments


def scan_fragments(con, sql: str) -> list:
    frs = fragments(con, sql)
    out = [f for st in sorted(frs) for f in frs[st] if not f.inputs and f.scans]
    assert out, f"no scan fragments in {sql}"
    return out


@pytest.fixture
def faults(local_lambda):
    """``faults(throttle=n, ...)``: the Engine function's next n invocations fail that way (see
    ``puffin.lambda_bridge.local``); everything is put back afterwards."""
    yield lambda **kw: local_lambda.control("faults", {"function": "puffin-engine", **kw})
    for fn in ("puffin-engine", "puffin-catalog"):
        local_lambda.control("faults", {"function": fn, **dict.fromkeys(FAULTS, 0)})
        local_lambda.control("config", {"function": fn, "timeout": FUNCTION_TIMEOUT_S, "concurrency": None,
                                        "retry_after": None})


@pytest.fixture
def settings(local_lambda, s3_bucket) -> LambdaSettings:
    return LambdaSettings.resolve({"endpoint_url": local_lambda.endpoint, "function_timeout": FUNCTION_TIMEOUT_S,
                                   "results_url": f"s3://{s3_bucket}/lambda-results", "max_concurrency": 4,
                                   "offload": "always"}, env={})


@pytest.fixture
def invoker(settings, s3_server):
    from puffin.storage import S3Config

    inv = Invoker(settings, S3Config.resolve(s3_options(s3_server)))
    yield inv
    inv.close()


def new_query_id() -> str:
    return f"q-{time.time_ns()}"
