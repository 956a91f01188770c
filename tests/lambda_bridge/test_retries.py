"""The invoker's retry policy against the local Invoke API service's injected faults: what is
retried (429, 5xx, transient function errors), what is not, the bound, the jittered backoff and a
429's Retry-After, the concurrency budget during retries, and a query ending mid-backoff."""

from __future__ import annotations

import random
import threading
import time

import duckdb
import pyarrow.fs as pafs
import pytest

from puffin.lambda_bridge import Invoker, LambdaUnavailable
from puffin.lambda_bridge.handler import transient
from puffin.lambda_bridge.retry import RetryPolicy
from tests.lambda_bridge.conftest import new_query_id, scan_fragments

AGG = "SELECT grp, count(*) AS n FROM events GROUP BY grp"


@pytest.mark.parametrize("fault, reason", [("throttle", "throttled"), ("service", "service"),
                                           ("transient", "transient")])
def test_retryable_failures_are_invoked_again(con, invoker, faults, local_lambda, fault, reason):
    f = scan_fragments(con, AGG)[0]
    faults(**{fault: 2})
    parts, _, info = invoker.invoke(f, new_query_id())  # attempts 1 and 2 fail, 3 answers
    assert info.retries == 2 and info.retried == {reason: 2} and parts[0].num_rows > 0
    assert 0 <= info.backoff_ms <= (0.1 + 0.2) * 1000  # full jitter under 0.1 s, then 0.2 s


@pytest.mark.parametrize("fault, reason", [("crash", "crashed"), ("error", "function_error")])
def test_other_failures_go_to_ray_at_once(con, invoker, faults, local_lambda, fault, reason):
    before = local_lambda.stats()["invocations"]
    faults(**{fault: 1})
    with pytest.raises(LambdaUnavailable) as e:
        invoker.invoke(scan_fragments(con, AGG)[0], new_query_id())
    assert e.value.reason == reason and e.value.attempts == 1 and e.value.retried == {}
    assert local_lambda.stats()["invocations"] == before + 1


def test_retries_are_bounded(con, invoker, faults, local_lambda):
    local_lambda.control("stats", {})  # zero the counters
    faults(throttle=10)
    with pytest.raises(LambdaUnavailable) as e:
        invoker.invoke(scan_fragments(con, AGG)[0], new_query_id())
    assert e.value.reason == "throttled" and e.value.attempts == 3 and e.value.retried == {"throttled": 2}
    assert local_lambda.stats()["throttled"] == 3  # three requests reached the service, no hidden botocore ones


def test_retry_after_is_a_floor_and_too_long_goes_to_ray(con, invoker, faults, local_lambda):
    f = scan_fragments(con, AGG)[0]
    local_lambda.control("config", {"function": "puffin-engine", "retry_after": 0.4})
    faults(throttle=1)
    _, _, info = invoker.invoke(f, new_query_id())
    assert info.retried == {"throttled": 1} and info.backoff_ms >= 400
    local_lambda.control("config", {"function": "puffin-engine", "retry_after": 30})  # over max_backoff (2 s)
    faults(throttle=1)
    start = time.monotonic()
    with pytest.raises(LambdaUnavailable) as e:
        invoker.invoke(f, new_query_id())
    assert time.monotonic() - start < 5 and e.value.attempts == 1 and "retry after 30s" in e.value.detail


def test_a_query_ending_interrupts_the_backoff(con, invoker, faults, local_lambda):
    f = scan_fragments(con, AGG)[0]
    invoker.invoke(f, new_query_id())  # the client made, the function warm
    local_lambda.control("config", {"function": "puffin-engine", "retry_after": 2.0})  # = max_backoff: waited
    faults(throttle=5)
    stop = threading.Event()
    start = time.monotonic()
    threading.Timer(0.2, stop.set).start()
    with pytest.raises(LambdaUnavailable) as e:
        invoker.invoke(f, new_query_id(), stop=stop)
    assert e.value.reason == "cancelled" and "during a retry's backoff (after throttled)" in e.value.detail
    assert time.monotonic() - start < 1.9  # not the 2 s Retry-After


def test_retries_stay_within_the_concurrency_budget(con, settings, invoker, faults, local_lambda):
    # max_attempts over the 6 throttles: however the retries interleave, no fragment can spend
    # all its attempts (with 4, one fragment retried quickly could take 4 of the 6 and fall back)
    inv = Invoker(settings.replace(max_concurrency=2, max_attempts=7), invoker.s3)
    try:
        frs = scan_fragments(con, AGG) * 3  # 6 invocations, 2 at a time
        local_lambda.control("stats", {})
        faults(throttle=6)
        qid = new_query_id()
        results = [fut.result(60) for fut in [inv.submit(f, qid) for f in frs]]
        assert sum(info.retries for _, _, info in results) == 6  # each throttle retried, none fell back
        stats = local_lambda.stats()
        assert stats["throttled"] == 6 and stats["peak_requests"] <= 2, stats
    finally:
        inv.close()


def test_the_jitter_is_full_and_capped():
    p = RetryPolicy(max_attempts=10, backoff=0.1, max_backoff=1.0, rng=random.Random(7))
    err = LambdaUnavailable("throttled", "f", "x")
    waits = [[p.delay(err, r) for _ in range(200)] for r in range(6)]
    for r, ws in enumerate(waits):
        assert 0 <= min(ws) and max(ws) <= min(1.0, 0.1 * 2 ** r)
        assert max(ws) > 0.8 * min(1.0, 0.1 * 2 ** r)  # spread over the whole range
    assert p.delay(err, 9) is None  # the tenth attempt was the last
    assert p.delay(LambdaUnavailable("timeout", "f", "x"), 0) is None
    assert p.delay(LambdaUnavailable("not_found", "f", "x"), 0) is None


def test_the_handler_marks_only_passing_failures_transient(tmp_path):
    with pytest.raises(FileNotFoundError) as missing:
        pafs.LocalFileSystem().open_input_file(str(tmp_path / "nope.parquet"))
    with pytest.raises(duckdb.IOException) as no_files:
        duckdb.sql(f"SELECT * FROM read_parquet('{tmp_path}/nope.parquet')")
    assert not transient(missing.value) and not transient(no_files.value)
    assert not transient(ValueError("bad")) and not transient(OSError("AWS Error ACCESS_DENIED during GetObject"))
    assert transient(ConnectionResetError(104, "Connection reset by peer"))
    assert transient(OSError("When reading information for key 'k' in bucket 'b': AWS Error NETWORK_CONNECTION "
                             "during HeadObject operation: curlCode: 7, Could not connect to server"))
