"""The result cache on a local directory and on the S3 test server (tests/s3_server.py, whose
fixtures tests/conftest.py provides)."""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import os
import socket
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from puffin import sources
from puffin.cache import ResultCache, cacheable, input_versions, normalize, open_cache
from puffin.errors import PuffinError
from puffin.storage import S3Config


def _table(n: int = 100, tag: str = "a") -> pa.Table:
    return pa.table({
        "id": pa.array(range(n), pa.int64()),
        "name": pa.array([f"{tag}{i}" for i in range(n)], pa.string_view()),
        "price": pa.array([decimal.Decimal(i) / 4 for i in range(n)], pa.decimal128(15, 2)),
        "at": pa.array([dt.datetime(2024, 1, 1 + i % 28) for i in range(n)], pa.timestamp("us", tz="UTC")),
        "tags": pa.array([[tag] * (i % 3) for i in range(n)], pa.list_(pa.string())),
        "note": pa.array([None if i % 5 else "x" for i in range(n)], pa.string()),
    })


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "puffin.cache" and r.levelno >= logging.WARNING]


def _s3_config(server) -> S3Config:
    return S3Config.resolve({"endpoint_url": server.endpoint, "access_key_id": server.access_key,
                             "secret_access_key": server.secret_key, "region": server.region})


# -- keys ---------------------------------------------------------------------------------------
def test_normalize_ignores_spelling_but_not_meaning():
    a = normalize("select  l_orderkey, count(*)\nfrom lineitem -- all of it\n where x > 1 group by 1")
    b = normalize("SELECT l_orderkey, COUNT(*) FROM lineitem WHERE x>1 GROUP BY 1")
    assert a == b
    assert normalize("SELECT 1 AS Foo") != normalize("SELECT 1 AS foo")  # the answer's column name
    assert normalize("SELECT * FROM t WHERE x > 1") != normalize("SELECT * FROM t WHERE x > 2")
    assert normalize("SELECT 1", "duckdb") != normalize("SELECT 1", "spark")
    assert normalize("not sql ((") == normalize("not  sql ((")  # unparsable: whitespace-normalized


def test_normalize_takes_a_parsed_expression_too():
    import sqlglot

    assert normalize(sqlglot.parse_one("select  1 as x")) == normalize("SELECT 1 AS x")


def test_only_read_only_deterministic_queries_are_cacheable():
    assert cacheable("SELECT l_returnflag, sum(l_quantity) FROM lineitem GROUP BY 1")
    assert cacheable("WITH a AS (SELECT 1 AS x) SELECT * FROM a UNION ALL SELECT 2")
    for sql in ("SELECT random()", "SELECT now()", "SELECT * FROM t WHERE d < current_date", "SELECT uuid()",
                "SELECT * FROM t USING SAMPLE 10%", "SELECT * FROM puffin_history()", "SELECT 1; SELECT 2",
                "COPY (SELECT 1) TO 'x.parquet'", "CREATE TABLE x AS SELECT 1", "INSERT INTO t VALUES (1)",
                "not sql (("):
        assert not cacheable(sql), sql


def test_key_covers_query_inputs_and_settings():
    k = ResultCache.key
    base = k("q", [("parquet", "t", ("/a", 1, 2))], ("utc",))
    assert len(base) == 64 and base == k("q", [("parquet", "t", ("/a", 1, 2))], ("utc",))
    assert base != k("q2", [("parquet", "t", ("/a", 1, 2))], ("utc",))
    assert base != k("q", [("parquet", "t", ("/a", 1, 3))], ("utc",))
    assert base != k("q", [("parquet", "t", ("/a", 1, 2))], ("Europe/Paris",))
    two = [("x", 1), ("y", 2)]
    assert k("q", two) == k("q", two[::-1]) and k("q", [], {"a": 1, "b": 2}) == k("q", [], {"b": 2, "a": 1})


def test_a_touched_or_grown_file_changes_the_key(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(_table(10), path)
    src = sources.from_path("t", str(path))
    v1 = input_versions({"t": src})
    assert v1 == input_versions({"t": src})  # nothing changed: the same versions
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # touched: same bytes, new mtime
    v2 = input_versions({"t": src})
    pq.write_table(_table(11), path)  # rewritten: new size
    v3 = input_versions({"t": src})
    keys = {ResultCache.key("q", v, ()) for v in (v1, v2, v3)}
    assert len(keys) == 3
    os.unlink(path)
    assert input_versions({"t": src}) is None  # a vanished input: the query is not cached


def test_in_memory_tables_are_versions_of_this_process_only():
    a, b = sources.from_arrow("t", _table(5)), sources.from_arrow("t", _table(5))
    va, vb = input_versions({"t": a}), input_versions({"t": b})
    assert va == input_versions({"t": a}) and va != vb  # re-registered: another version
    assert any(len(part) == 16 for part in va[0] if isinstance(part, str))  # the process's token


def test_another_iceberg_snapshot_changes_the_key(tmp_path):
    pytest.importorskip("pyiceberg")
    from pyiceberg.catalog.sql import SqlCatalog
    from sqlglot import exp

    from puffin.iceberg import Catalogs

    props = {"type": "sql", "uri": f"sqlite:///{tmp_path}/cat.db", "warehouse": f"file://{tmp_path}/wh"}
    cat = SqlCatalog("lake", **props)
    cat.create_namespace("ns")
    tbl = cat.create_table("ns.t", schema=pa.schema([("id", pa.int64())]))
    tbl.append(pa.table({"id": pa.array([1, 2], pa.int64())}))
    ref = exp.to_table("lake.ns.t")
    resolve = lambda: Catalogs({"lake": props}, S3Config()).resolve(ref)
    first = input_versions({"lake.ns.t": resolve()})
    assert first == input_versions({"lake.ns.t": resolve()})
    assert tbl.current_snapshot().snapshot_id in first[0]
    tbl.append(pa.table({"id": pa.array([3], pa.int64())}))
    second = input_versions({"lake.ns.t": resolve()})
    assert ResultCache.key("q", first) != ResultCache.key("q", second)


# -- local directory ----------------------------------------------------------------------------
def test_local_hit_returns_the_identical_table(tmp_path):
    cache = open_cache(f"file://{tmp_path}/cache", public_base_url="https://d1.cloudfront.net/cache/")
    key = cache.key(normalize("SELECT * FROM t"), [("t", 1)], ())
    assert cache.get(key) is None
    table = _table(1000).replace_schema_metadata({"origin": "puffin"})
    uri = cache.put(key, table)
    assert uri == cache.uri(key) == f"{tmp_path}/cache/{key}.parquet" and os.path.exists(uri)
    assert cache.public_url(key) == f"https://d1.cloudfront.net/cache/{key}.parquet"
    t0 = time.perf_counter()
    hit = cache.get(key)
    assert time.perf_counter() - t0 < 0.5
    assert hit.equals(table) and hit.schema.equals(table.schema) and hit.schema.field("name").type == pa.string_view()
    assert pq.read_table(uri).equals(table)  # a plain Parquet file: clients read it directly
    assert open_cache(str(tmp_path / "cache")).get(key).equals(table)  # another process's view


def test_eviction_keeps_the_bound_and_the_recently_used(tmp_path):
    probe = open_cache(str(tmp_path / "probe"))
    probe.put("p", _table(300, "p"))
    size = probe.total_bytes()
    cache = open_cache(str(tmp_path / "c"), max_bytes=int(size * 3.5), max_entry_bytes=size * 2)
    for name in "abc":
        cache.put(name, _table(300, name))
    assert cache.get("a") is not None  # a used now: b is the least recently used
    cache.put("d", _table(300, "d"))
    assert cache.total_bytes() <= cache.max_bytes
    assert [cache.get(k) is not None for k in "abcd"] == [True, False, True, True]
    for i in range(20):
        cache.put(f"k{i}", _table(300, str(i)))
        assert cache.total_bytes() <= cache.max_bytes
    assert cache.put("huge", _table(20000)) is None  # larger than an entry may be: not stored
    interval = pa.table({"i": pa.array([pa.MonthDayNano([1, 2, 3])], pa.month_day_nano_interval())})
    assert cache.put("interval", interval) is None  # a type Parquet cannot hold: not cached, no error


def test_corrupt_or_half_written_entries_are_ignored_and_replaced(tmp_path, caplog):
    cache = open_cache(str(tmp_path))
    table = _table(200)
    data, marker = tmp_path / "k1.parquet", tmp_path / "k1.json"
    cache.put("k1", table)
    blob = data.read_bytes()
    data.write_bytes(blob[: len(blob) // 2])  # truncated
    assert cache.get("k1") is None and not data.exists() and not marker.exists()
    cache.put("k1", table)
    flipped = bytearray(data.read_bytes())
    flipped[len(flipped) // 2] ^= 0xFF  # same size, one byte altered
    data.write_bytes(bytes(flipped))
    assert cache.get("k1") is None
    cache.put("k1", table)
    marker.write_text("{not json")
    assert cache.get("k1") is None
    data.write_bytes(blob[:100])  # a writer died before its commit marker: not an entry yet
    assert cache.get("k1") is None
    assert cache.put("k1", table) and cache.get("k1").equals(table)
    assert len(_warnings(caplog)) == 3  # each corrupt entry said so once


def test_malformed_urls_are_puffin_errors():
    for url in ("http://host/x", "s3://", "s3:///prefix", "file://host/dir", "", "redis://h/0"):
        with pytest.raises(PuffinError, match="malformed result cache URL"):
            open_cache(url)
    assert open_cache(None) is None and open_cache(False) is None


def test_an_unusable_directory_is_one_warning_and_misses(tmp_path, caplog):
    (tmp_path / "file").write_text("")
    cache = open_cache(str(tmp_path / "file" / "cache"))
    for _ in range(3):
        assert cache.put("k", _table(10)) is None and cache.get("k") is None
    assert len(_warnings(caplog)) == 1


# -- S3 -----------------------------------------------------------------------------------------
def test_s3_hit_corruption_and_eviction(s3_server, s3_bucket, caplog):
    cfg = _s3_config(s3_server)
    cache = open_cache(f"s3://{s3_bucket}/cache-tests/results/", cfg)
    table = _table(500)
    assert cache.get("k1") is None and not _warnings(caplog)  # a plain miss, no warning
    assert cache.put("k1", table) == f"s3://{s3_bucket}/cache-tests/results/k1.parquet"
    assert cache.get("k1").equals(table)
    client = s3_server.client()
    blob = client.get_object(Bucket=s3_bucket, Key="cache-tests/results/k1.parquet")["Body"].read()
    client.put_object(Bucket=s3_bucket, Key="cache-tests/results/k1.parquet", Body=blob[:-50])  # torn
    assert cache.get("k1") is None
    assert "Contents" not in client.list_objects_v2(Bucket=s3_bucket, Prefix="cache-tests/results/k1")
    client.put_object(Bucket=s3_bucket, Key="cache-tests/results/k2.parquet", Body=blob)  # no commit marker
    assert cache.get("k2") is None
    cache.put("k2", table)
    assert cache.get("k2").equals(table)
    size = cache.total_bytes() // 2  # two entries stored: one entry's size
    small = open_cache(f"s3://{s3_bucket}/cache-tests/small", cfg, max_bytes=int(size * 2.5), max_entry_bytes=size * 2)
    for i in range(6):
        small.put(f"e{i}", _table(500, str(i)))
        assert small.total_bytes() <= small.max_bytes
    assert small.get("e5") is not None and small.get("e0") is None


def test_s3_inputs_are_versioned_by_etag(s3_server, s3_bucket):
    cfg = _s3_config(s3_server)
    client = s3_server.client()
    sink = pa.BufferOutputStream()
    pq.write_table(_table(50, "a"), sink)
    client.put_object(Bucket=s3_bucket, Key="cache-tests/inputs/t/part-0.parquet", Body=sink.getvalue().to_pybytes())
    src = sources.from_path("t", f"s3://{s3_bucket}/cache-tests/inputs/t/", s3=cfg)
    v1 = input_versions({"t": src})
    assert v1 == input_versions({"t": src})
    sink = pa.BufferOutputStream()
    pq.write_table(_table(50, "b"), sink)  # same size, other bytes
    client.put_object(Bucket=s3_bucket, Key="cache-tests/inputs/t/part-0.parquet", Body=sink.getvalue().to_pybytes())
    assert ResultCache.key("q", v1) != ResultCache.key("q", input_versions({"t": src}))


def test_unreachable_s3_is_a_miss_and_one_warning(caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    cfg = S3Config.resolve({"endpoint_url": f"http://127.0.0.1:{port}", "access_key_id": "a",
                            "secret_access_key": "s3cr3t-value", "region": "us-east-1"})
    cache = open_cache("s3://bucket/prefix", cfg)
    t0 = time.monotonic()
    for _ in range(5):
        assert cache.get("k") is None
        assert cache.put("k", _table(10)) is None
    assert time.monotonic() - t0 < 10
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "s3://bucket/prefix" in warnings[0] and "s3cr3t-value" not in warnings[0]
