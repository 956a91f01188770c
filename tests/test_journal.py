"""A session's query log and result cache (puffin/journal.py): every query, ok or failed, is
logged with its fields; puffin_history() reads the log in SQL; a repeated query over unchanged
inputs is answered from the cache (EXPLAIN says so) and a touched file misses; a Redis log that
dies mid-session leaves queries working."""

from __future__ import annotations

import os
import time

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import puffin
from puffin.testing import assert_same_result
from tests import redis_server as _redis

redis_server = _redis.redis_server  # the fixture: a real redis-server on a free port

SQL = "SELECT g, sum(a) AS s FROM t GROUP BY g ORDER BY g"


@pytest.fixture
def table_file(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"g": [1, 1, 2, 3], "a": [5, 3, 2, 8]}), path)
    return str(path)


def _con(table_file, **kwargs):
    con = puffin.connect(prestart=False, **kwargs)
    con.register("t", table_file)
    return con


def test_every_query_is_logged_ok_or_failed(tmp_path, table_file):
    con = _con(table_file, log=str(tmp_path / "log.jsonl"))
    con.sql(SQL)
    with pytest.raises(puffin.BindError):
        con.sql("SELECT nope FROM t")
    h = con.history().arrow().to_pylist()
    assert [e["query"] for e in h] == ["SELECT nope FROM t", SQL]  # newest first
    failed, ok = h
    assert ok["error"] is None and ok["rows"] == 3 and ok["stages"] == 1 and ok["duration"] > 0
    assert ok["fragments"] == {"ray": 0, "lambda": 0, "inline": 1} and ok["bytes_scanned"] > 0
    assert len(ok["id"]) == 26 and ok["user"] and ok["start"] is not None
    assert "BindError" in failed["error"] and "nope" in failed["error"]
    rows = con.sql("SELECT query FROM puffin_history() WHERE error IS NOT NULL").fetchall()
    assert rows == [("SELECT nope FROM t",)]


def test_a_repeated_query_comes_from_the_cache_until_an_input_changes(tmp_path, table_file):
    con = _con(table_file, log=str(tmp_path / "log.jsonl"), cache=str(tmp_path / "cache"))
    first = con.sql(SQL).arrow()
    assert "result cache: hit" in con.sql("EXPLAIN " + SQL).render()
    again = con.sql(SQL).arrow()
    assert again.equals(first)
    want = duckdb.sql(SQL.replace("FROM t", f"FROM '{table_file}'")).to_arrow_table()
    assert_same_result(again, want, ordered=True, label=SQL)
    newest = con.history(last=1).arrow().to_pylist()[0]
    assert newest["cache"] and newest["fragments"] == {"ray": 0, "lambda": 0, "inline": 0}
    assert con.sql(SQL, cache=False) is not None and con.history(last=1).arrow()["fragments"][0].as_py()["inline"] == 1
    time.sleep(0.01)
    pq.write_table(pa.table({"g": [1, 1, 2, 3], "a": [5, 3, 2, 9]}), table_file)  # touched: a new version
    os.utime(table_file)
    con.register("t", table_file)
    assert "result cache: miss" in con.sql("EXPLAIN " + SQL).render()
    assert con.sql(SQL).fetchall()[-1][1] == 9


def test_malformed_log_or_cache_urls_are_refused_at_connect():
    with pytest.raises(puffin.PuffinError, match="query log URL"):
        puffin.connect(prestart=False, log="redis://host:notaport/0")
    with pytest.raises(puffin.PuffinError, match="result cache URL"):
        puffin.connect(prestart=False, cache="ftp://somewhere/cache")


def test_queries_run_on_when_the_redis_log_dies(redis_server, table_file, caplog):
    con = _con(table_file, log=redis_server.url)
    con.sql(SQL)
    assert con.history().arrow().num_rows == 1
    redis_server.kill()
    for _ in range(3):
        assert con.sql(SQL).arrow().num_rows == 3
    assert "query log" in caplog.text
