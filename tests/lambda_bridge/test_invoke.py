"""The Engine function through the real boto3 invoke path against the local Lambda service."""

from __future__ import annotations

import dataclasses
import os

import pyarrow as pa
import pytest
from botocore.exceptions import ClientError

from puffin.lambda_bridge import LambdaQueryError, LambdaUnavailable, offloadable
from puffin.operators.fragment import run_fragment
from tests.lambda_bridge.conftest import events_table, new_query_id, put_parquet, scan_fragments

AGG = "SELECT grp, count(*) AS n, sum(v) AS s FROM events WHERE id % 3 <> 0 GROUP BY grp"


def _sorted(t: pa.Table) -> pa.Table:
    return t.sort_by([(c, "ascending") for c in t.column_names])


def _same(a: list[pa.Table], b: list[pa.Table]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.schema.equals(y.schema)
        assert _sorted(x).equals(_sorted(y))


def test_scan_fragments_match_a_local_run(con, invoker):
    frs = scan_fragments(con, AGG)
    assert len(frs) == 2 and all(offloadable(f)[0] for f in frs)
    qid = new_query_id()
    for f in frs:
        parts, metrics, info = invoker.invoke(f, qid)
        local, local_metrics = run_fragment(f, {}, None)
        _same(parts, local)
        assert metrics.rows_out == local_metrics.rows_out and metrics.rows_in == local_metrics.rows_in
        assert info.via == "inline" and info.mode == "sync" and info.function == "puffin-engine"


def test_result_over_6mb_comes_back_through_s3(con, invoker, s3_server, s3_bucket):
    (f,) = scan_fragments(con, "SELECT * FROM big")
    qid = new_query_id()
    parts, metrics, info = invoker.invoke(f, qid)
    assert info.via == "s3" and info.result_bytes > 4 << 20
    assert metrics.rows_out == 150_000
    _same(parts, run_fragment(f, {}, None)[0])
    key = f"lambda-results/{qid}/{f.stage_id}/{f.task}/0/data.arrows"
    assert s3_server.client().head_object(Bucket=s3_bucket, Key=key)["ContentLength"] > 0
    # an invocation of the same attempt again is harmless: answered from the completion marker
    again, _, info2 = invoker.invoke(f, qid)
    assert info2.replayed and info2.via == "s3"
    _same(again, parts)
    invoker.cleanup(qid)
    with pytest.raises(ClientError):
        s3_server.client().head_object(Bucket=s3_bucket, Key=key)


def test_large_result_without_a_result_store_falls_back(con, invoker):
    (f,) = scan_fragments(con, "SELECT * FROM big")
    invoker.settings = invoker.settings.replace(results_url=None)
    with pytest.raises(LambdaUnavailable) as e:
        invoker.invoke(f, new_query_id())
    assert e.value.reason == "function_error" and "result store" in str(e.value) and not e.value.permanent


def test_sync_invocation_twice_is_harmless(con, invoker):
    f = scan_fragments(con, AGG)[0]
    qid = new_query_id()
    a, _, _ = invoker.invoke(f, qid)
    b, _, _ = invoker.invoke(f, qid)  # same query, fragment and attempt: same answer, nothing left over
    _same(a, b)


def test_second_read_of_a_file_is_a_warm_cache_hit(con, invoker, local_lambda):
    local_lambda.control("reset")  # every environment cold
    f = scan_fragments(con, AGG)[0]
    _, _, first = invoker.invoke(f, new_query_id())
    assert first.cold and first.init_ms is not None and first.cache_misses >= 1 and first.cache_hits == 0
    parts, _, second = invoker.invoke(f, new_query_id())
    assert not second.cold and second.init_ms is None and second.instance == first.instance
    assert second.cache_hits >= 1 and second.cache_misses == 0 and second.cache_hit_bytes > 0
    _same(parts, run_fragment(f, {}, None)[0])


def test_cache_never_serves_a_rewritten_file(con, invoker, s3_server, s3_bucket, events):
    sql = "SELECT count(*) AS n, sum(id) AS s FROM events"
    f = scan_fragments(con, sql)[0]
    invoker.invoke(f, new_query_id())  # now cached
    path = f.scans[0].units[0].path
    from puffin.lambda_bridge.cache import _version
    from puffin.storage import s3_filesystem

    assert _version(s3_filesystem(f.scans[0].storage), path)[0].startswith("etag:")  # keyed by ETag
    key = path.split("/", 1)[1]
    original = s3_server.client().get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    try:
        seed = 0 if key.endswith("part-0.parquet") else 1
        changed = events_table(seed).set_column(0, "id", pa.array([i * 10 for i in events_table(seed)["id"].to_pylist()]))
        put_parquet(s3_server, s3_bucket, key, changed, row_group_size=1000)
        parts, _, info = invoker.invoke(f, new_query_id())
        assert info.cache_misses >= 1
        _same(parts, run_fragment(f, {}, None)[0])
    finally:
        s3_server.client().put_object(Bucket=s3_bucket, Key=key, Body=original)


def test_event_invocation_polls_the_completion_marker(con, invoker):
    invoker.settings = invoker.settings.replace(mode="event")
    qid = new_query_id()
    for f in scan_fragments(con, AGG):
        parts, _, info = invoker.invoke(f, qid)
        assert info.mode == "event"
        _same(parts, run_fragment(f, {}, None)[0])
    invoker.cleanup(qid)


def test_a_query_error_is_not_a_fallback(con, invoker):
    f = scan_fragments(con, AGG)[0]
    bad = dataclasses.replace(f, sql=f"SELECT CAST(grp AS INTEGER) AS x FROM {f.scans[0].name}")
    with pytest.raises(LambdaQueryError, match="Conversion Error"):
        invoker.invoke(bad, new_query_id())


def test_submit_runs_fragments_concurrently(con, invoker):
    frs = scan_fragments(con, AGG)
    qid = new_query_id()
    futures = [invoker.submit(f, qid) for f in frs]
    for f, fut in zip(frs, futures):
        _same(fut.result(60)[0], run_fragment(f, {}, None)[0])


def test_fragments_are_sized_to_the_function(con, monkeypatch):
    import os

    from puffin.lambda_bridge.handler import MEMORY_FRACTION, fit_to_function

    f = scan_fragments(con, AGG)[0]
    assert fit_to_function(f) == f or os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "3538")
    g = fit_to_function(f)
    assert g.threads == max(f.threads, min(os.cpu_count(), 2))
    assert g.memory_limit == int(3538 * MEMORY_FRACTION) << 20


def test_a_function_group_keeps_each_file_on_its_member(con, settings, invoker):
    from puffin.lambda_bridge import Invoker
    from puffin.lambda_bridge.routing import routing_key

    inv = Invoker(settings.replace(group=("puffin-engine:g0", "puffin-engine:g1")), invoker.s3)
    try:
        for f in scan_fragments(con, AGG):
            _, _, first = inv.invoke(f, new_query_id())
            _, _, again = inv.invoke(f, new_query_id())
            assert first.qualifier == again.qualifier == inv.ring.member(routing_key(f))[1]
            assert again.instance == first.instance and again.cache_hits >= 1 and again.cache_misses == 0
    finally:
        inv.close()


def test_cache_eviction_keeps_what_a_fragment_reads(con, tmp_path):
    from puffin.lambda_bridge.cache import FileCache

    f = scan_fragments(con, "SELECT count(*) AS n, sum(id) AS s FROM events")[0]
    paths = {u.path for r in f.scans for u in r.units}
    expected, _ = run_fragment(f, {}, None)
    probe = FileCache(str(tmp_path / "probe"), 1 << 30, 1 << 30)
    probe.localize(f)
    size = probe.used
    cache = FileCache(str(tmp_path / "c"), budget=2 * size + 1, max_file=size)
    first = cache.localize(f)
    assert cache.stats.misses == len(paths) and all(os.path.exists(u.path) for r in first.scans for u in r.units)
    _same(run_fragment(first, {}, None)[0], expected)
    other = scan_fragments(con, "SELECT count(*) AS n FROM big")[0]
    cache.max_file = 1 << 40
    cache.budget = size + 1  # too small for both: 'big' goes around the cache, events stays
    cache.localize(other)
    assert cache.stats.bypassed == 1 and cache.stats.evictions == 0
    cache.budget = 2 * size + 1
    again = cache.localize(f)
    assert cache.stats.hits == len(paths)
    _same(run_fragment(again, {}, None)[0], expected)
    cache.clear()
    assert cache.used == 0
