"""Object-store reads survive throttling, and fragments on other Ray nodes get the credentials.

A small HTTP proxy in front of the S3 server answers some object reads with 503 SlowDown (what
S3 sends when throttling) before passing requests on untouched, signatures included.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import pytest

import puffin
from puffin.testing import assert_same_result
from tests.conftest import tpch_query

SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message></Error>")


class ThrottlingProxy:
    def __init__(self, upstream: str):
        target = urlparse(upstream)
        self.failures_left = 0
        self.injected = 0
        lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _handle(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    throttle = self.command == "GET" and "?" not in self.path and proxy.failures_left > 0
                    if throttle:
                        proxy.failures_left -= 1
                        proxy.injected += 1
                if throttle:
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(SLOW_DOWN)))
                    self.end_headers()
                    self.wfile.write(SLOW_DOWN)
                    return
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                conn.request(self.command, self.path, body=body or None, headers=dict(self.headers))
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                head = self.command == "HEAD"  # HEAD keeps the object's length, and has no body
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection") and (head or k.lower() != "content-length"):
                        self.send_header(k, v)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(s3_server):
    p = ThrottlingProxy(s3_server.endpoint)
    yield p
    p.close()


def _opts(server, endpoint, **extra):
    return {"endpoint_url": endpoint, "access_key_id": server.access_key,
            "secret_access_key": server.secret_key, "region": server.region, **extra}


def test_throttled_reads_are_retried(local_ray, s3_server, s3_tpch, proxy, oracle):
    con = puffin.connect(target_partitions=2, s3=_opts(s3_server, proxy.endpoint))
    for t in ("customer", "orders", "lineitem"):
        con.register(t, f"{s3_tpch}/{t}")
    proxy.failures_left = 3  # the fragments' own reads get throttled
    sql = tpch_query(3)
    assert_same_result(con.sql(sql).arrow(), oracle.sql(sql).to_arrow_table(), ordered=True, label="q3 throttled")
    assert proxy.injected == 3


def test_throttling_beyond_the_retry_budget_is_a_clear_error(local_ray, s3_server, s3_tpch, proxy):
    con = puffin.connect(s3=_opts(s3_server, proxy.endpoint, max_attempts=1))
    proxy.failures_left = 1000
    with pytest.raises(puffin.PuffinError, match="nation") as info:
        con.register("nation", f"{s3_tpch}/nation")
    assert s3_server.secret_key not in str(info.value)
    proxy.failures_left = 0
    con.register("nation", f"{s3_tpch}/nation")  # the session is fine once the store recovers
    assert con.sql("SELECT count(*) AS n FROM nation").fetchall() == [(25,)]


@pytest.fixture
def cluster(ray_backends):
    ray_backends.use("cluster")
    yield
    ray_backends.use("local")


def test_fragments_on_other_nodes_read_s3_without_local_configuration(cluster, s3_server, s3_tpch, oracle):
    con = puffin.connect(target_partitions=3, s3=_opts(s3_server, s3_server.endpoint),
                         config={"broadcast_bytes": 0, "replicate_bytes": 0})
    for t in ("customer", "orders", "lineitem", "supplier", "nation", "region"):
        con.register(t, f"{s3_tpch}/{t}")
    sql = tpch_query(5)
    analyzed = con.sql("EXPLAIN ANALYZE " + sql).render()
    assert "workers=2" in analyzed or "workers=3" in analyzed, analyzed
    assert_same_result(con.sql(sql).arrow(), oracle.sql(sql).to_arrow_table(), ordered=True, label="q5 on 3 nodes")
