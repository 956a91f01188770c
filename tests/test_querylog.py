"""The query log against a real redis-server (tests/redis_server.py) and the local file log."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time

import pyarrow as pa
import pytest

from puffin.errors import PuffinError
from puffin.querylog import SCHEMA, FileLog, RedisLog, new_entry, new_ulid, open_log, ulid_time
from tests import redis_server as _redis

redis_server = _redis.redis_server  # the fixture: a real redis-server on a free port

UTC = dt.timezone.utc


def _full_entry(query: str, **over) -> dict:
    e = new_entry(query, user="ana")
    e.update(duration=12.5, rows=3, bytes_scanned=4096, stages=2, cache="s3://b/c/k.parquet",
             snapshots={"lake.ns.orders": 7_000_000_000_000_000_001}, fragments={"ray": 4, "lambda": 2, "inline": 0})
    e.update(over)
    return e


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "puffin.querylog" and r.levelno >= logging.WARNING]


# -- ULIDs and URLs -------------------------------------------------------------------------------
def test_ulid_is_26_crockford_chars_sortable_and_carries_its_time():
    ids = [new_ulid() for _ in range(1000)]
    assert all(len(i) == 26 and set(i) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ") for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)  # monotonic within a millisecond too
    assert new_ulid(0) < new_ulid(1) < new_ulid(2**48 - 1)
    assert new_ulid(0).startswith("0000000000") and new_ulid(2**48 - 1).startswith("7ZZZZZZZZZ")
    assert abs(ulid_time(new_ulid()).timestamp() - time.time()) < 2


@pytest.mark.parametrize("url", ["http://host/x", "redis://host:notaport/0", "redis://host:6379/abc",
                                 "file://otherhost/x.jsonl", "", "redis://h:6379/0?retention_days=soon",
                                 "redis://h:6379/0?socket_timeout=slow"])
def test_malformed_urls_are_puffin_errors_naming_them(url):
    with pytest.raises(PuffinError, match="malformed query log URL"):
        open_log(url)


def test_url_forms_and_the_password_never_shows(tmp_path):
    assert isinstance(open_log(f"file://{tmp_path}/a.jsonl"), FileLog)
    assert open_log(str(tmp_path / "b.jsonl")).path == str(tmp_path / "b.jsonl")
    log = open_log("rediss://default:s3cret@cache.example.com:6380/2?max_entries=50&retention_days=7&prefix=t")
    assert isinstance(log, RedisLog) and log.max_entries == 50 and log.retention_s == 7 * 86400
    assert log.prefix == "t" and "s3cret" not in log.url and "****" in log.url
    kwargs = log._client.connection_pool.connection_kwargs  # TLS, AUTH, db: what ElastiCache needs
    assert kwargs["password"] == "s3cret" and kwargs["db"] == 2 and log._client.connection_pool.connection_class.__name__ == "SSLConnection"


def test_default_file_log_under_puffin_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PUFFIN_HOME", str(tmp_path / "home"))
    log = open_log(None)
    assert isinstance(log, FileLog) and log.path == str(tmp_path / "home" / "history.jsonl")
    log.record(_full_entry("SELECT 1"))
    log.record(_full_entry("SELECT nope", error="BindError: no column nope", rows=None))
    t = log.history()
    assert t.schema == SCHEMA and t.column("query").to_pylist() == ["SELECT nope", "SELECT 1"]
    assert t.column("error").to_pylist() == ["BindError: no column nope", None]
    with open(log.path, "a") as f:
        f.write('{"id": "torn')  # a half-written last line is skipped
    assert open_log(None).history().num_rows == 2


def test_file_log_keeps_retention_and_cap(tmp_path):
    log = FileLog(str(tmp_path / "h.jsonl"), retention_days=1, max_entries=5)
    old = dt.datetime.now(UTC) - dt.timedelta(days=3)
    for i in range(3):
        log.record(_full_entry(f"SELECT {i} -- old", start=(old + dt.timedelta(seconds=i)).isoformat()))
    for i in range(30):
        log.record(_full_entry(f"SELECT {i}"))
    t = log.history()
    assert t.num_rows == 5 and t.column("query").to_pylist() == [f"SELECT {i}" for i in range(29, 24, -1)]
    with open(log.path) as f:
        lines = f.readlines()
    assert len(lines) <= 5 + 10 and not any("old" in line for line in lines)  # trimmed every 10 records


def test_file_log_never_raises(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    log = FileLog(str(blocker / "sub" / "h.jsonl"))  # its directory cannot be made
    for _ in range(3):
        log.record(_full_entry("SELECT 1"))
    assert len(_warnings(caplog)) == 1


# -- Redis ----------------------------------------------------------------------------------------
def test_every_field_is_recorded_ok_and_failed(redis_server):
    log = open_log(redis_server.url)
    ok = _full_entry("SELECT count(*) FROM lake.ns.orders")
    log.record(ok)
    with pytest.raises(ZeroDivisionError), log.timed("SELECT 1/0", user="bob") as e:
        e["stages"] = 1
        raise ZeroDivisionError("division by zero")
    t = log.history()
    assert t.schema == SCHEMA and t.num_rows == 2
    failed, good = t.to_pylist()
    assert failed["query"] == "SELECT 1/0" and failed["error"] == "ZeroDivisionError: division by zero"
    assert failed["user"] == "bob" and failed["stages"] == 1 and failed["duration"] >= 0 and failed["cache"] is None
    assert good == {"id": ok["id"], "query": ok["query"], "user": "ana", "start": dt.datetime.fromisoformat(ok["start"]),
                    "duration": 12.5, "rows": 3, "bytes_scanned": 4096, "stages": 2, "cache": "s3://b/c/k.parquet",
                    "error": None, "snapshots": [("lake.ns.orders", 7_000_000_000_000_000_001)],
                    "fragments": {"ray": 4, "lambda": 2, "inline": 0}}
    client = redis_server.client()  # stored as JSON strings (no RedisJSON in this server), with a TTL
    stored = json.loads(client.get(f"puffin:log:e:{ok['id']}"))
    assert stored["fragments"] == {"ray": 4, "lambda": 2, "inline": 0} and stored["error"] is None
    assert 0 < client.ttl(f"puffin:log:e:{ok['id']}") <= 30 * 86400 + 1
    assert client.zcard("puffin:log:index") == 2


def test_history_newest_first_last_n_and_since(redis_server):
    log = open_log(redis_server.url)
    base = dt.datetime.now(UTC) - dt.timedelta(minutes=10)
    for i in (3, 0, 4, 1, 2):  # recorded out of order: history orders by start time
        log.record(_full_entry(f"q{i}", start=base + dt.timedelta(minutes=i)))
    assert log.history().column("query").to_pylist() == ["q4", "q3", "q2", "q1", "q0"]
    assert log.history(last=2).column("query").to_pylist() == ["q4", "q3"]
    assert log.history(since=base + dt.timedelta(minutes=2, seconds=30)).column("query").to_pylist() == ["q4", "q3"]
    assert log.history(since=(base + dt.timedelta(minutes=1)).isoformat(), last=10).num_rows == 4
    assert log.puffin_history().num_rows == 5
    client = redis_server.client()  # a foreign or damaged value under the log's keys is skipped
    client.set("puffin:log:e:BAD", '{"id": "BAD", "start": "yesterday", "rows": "many"}')
    client.zadd("puffin:log:index", {"BAD": time.time() * 1000})
    client.set("puffin:log:e:BAD2", "{not json")
    client.zadd("puffin:log:index", {"BAD2": time.time() * 1000})
    assert log.history().num_rows == 5


def test_retention_and_cap_hold_in_redis(redis_server):
    log = open_log(redis_server.url + "?retention_days=1&max_entries=20&prefix=p")
    old = dt.datetime.now(UTC) - dt.timedelta(days=2)
    for i in range(5):
        log.record(_full_entry(f"old {i}", start=old + dt.timedelta(seconds=i)))
    near = dt.datetime.now(UTC) - dt.timedelta(days=1) + dt.timedelta(seconds=1.5)
    log.record(_full_entry("about to expire", start=near))
    for i in range(30):
        log.record(_full_entry(f"new {i}"))
    client = redis_server.client()
    assert client.zcard("p:index") == 20
    assert len(list(client.scan_iter("p:e:*"))) == 20  # trimmed entries' values went too
    assert log.history().column("query").to_pylist() == [f"new {i}" for i in range(29, 9, -1)]
    log2 = open_log(redis_server.url + "?retention_days=1&prefix=q")
    log2.record(_full_entry("about to expire", start=near))
    log2.record(_full_entry("fresh"))
    (key,) = [k for k in client.scan_iter("q:e:*") if "about" in client.get(k)]
    assert client.ttl(key) <= 2
    time.sleep(2.2)  # past the retention: its value expired, the index trims it, history skips it
    assert log2.history().column("query").to_pylist() == ["fresh"]
    assert client.get(key) is None


def test_killing_redis_mid_session_never_fails_queries(redis_server, caplog):
    log = open_log(redis_server.url)
    log.retry_interval = 0.3
    log.record(_full_entry("before"))
    redis_server.kill()
    caplog.set_level(logging.WARNING, logger="puffin.querylog")
    t0 = time.monotonic()
    for i in range(20):
        log.record(_full_entry(f"during {i}"))
        with log.timed(f"timed {i}") as e:
            e["rows"] = i
    elapsed = time.monotonic() - t0
    assert elapsed < 2.0, f"40 records with Redis down took {elapsed:.2f}s"
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "query log redis://127.0.0.1" in warnings[0]
    with pytest.raises(PuffinError, match="cannot read the query log"):
        log.history()
    redis_server.start()  # the same port: the buffered entries are written on the next record
    time.sleep(0.35)
    log.record(_full_entry("after"))
    queries = log.history().column("query").to_pylist()
    # "before" died with the server (no persistence); the 40 written while it was down were buffered
    assert queries[0] == "after" and queries[-1] == "during 0" and len(queries) == 41
    assert len(_warnings(caplog)) == 2 and "reachable again" in _warnings(caplog)[1]


def test_unreachable_or_slow_redis_returns_quickly(redis_server, caplog):
    caplog.set_level(logging.WARNING, logger="puffin.querylog")
    port = redis_server.port
    redis_server.kill()
    log = open_log(f"redis://127.0.0.1:{port}/0")
    t0 = time.monotonic()
    assert log.ping() is False  # what connect() may call: the outage's one warning, at once
    for _ in range(10):
        log.record(_full_entry("SELECT 1"))
    assert time.monotonic() - t0 < 1.0 and len(_warnings(caplog)) == 1
    redis_server.start()
    slow = open_log(redis_server.url)
    slow.record(_full_entry("warm"))  # connected
    sleeper = threading.Thread(target=lambda: redis_server.client().execute_command("DEBUG", "SLEEP", "1.0"))
    sleeper.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    slow.record(_full_entry("during a stall"))
    assert time.monotonic() - t0 < 0.8  # the 0.2 s socket timeout, not the 1 s stall
    sleeper.join()
    assert len(_warnings(caplog)) == 2


def test_history_is_a_table_puffin_can_query(redis_server):
    import puffin

    log = open_log(redis_server.url)
    log.record(_full_entry("SELECT 1"))
    log.record(_full_entry("SELECT x", error="BindError: x"))
    con = puffin.connect(prestart=False)
    con.register("puffin_history", log.history())
    t = con.sql("SELECT query, fragments.ray AS ray, snapshots['lake.ns.orders'] AS snap FROM puffin_history "
                "WHERE error IS NOT NULL").arrow()
    assert t.to_pylist() == [{"query": "SELECT x", "ray": 4, "snap": 7_000_000_000_000_000_001}]
    assert isinstance(log.history(), pa.Table)
