# ruff: noqa: F811 - the fixtures imported from tests.lambda_bridge.conftest are parameters here
"""Queries whose scan fragments run on the local Lambda service, with the rest of the plan on Ray.

The local Invoke API service (``python -m puffin.lambda_bridge.local``) and the S3 test server
(SeaweedFS) are the ones tests/lambda_bridge uses; Ray is the local test Ray. The 22 TPC-H
queries at SF0.1 run from S3 with ``offload="always"`` and must match DuckDB with every scan
fragment on Lambda (EXPLAIN ANALYZE says so);
injected throttles, timeouts and crashes fall back to Ray; a second run hits the warm-partition
caches; bad configuration warns once (``auto``) or names the setting (``always``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings

import duckdb
import pytest

import puffin
from puffin.demo import TABLES, generate_tpch
from puffin.errors import PuffinError
from puffin.lambda_bridge.offload import LambdaFallbackWarning
from puffin.testing import assert_same_result, has_order_by
from tests.conftest import tpch_query
from tests.lambda_bridge.conftest import FUNCTION_TIMEOUT_S, big, events, faults, local_lambda, s3_options  # noqa: F401

AGG = "SELECT grp, count(*) AS n, sum(v) AS s FROM events GROUP BY grp ORDER BY grp"
DISTRIBUTED = {"broadcast_bytes": 0, "replicate_bytes": 0}  # scans, shuffles and joins: many stages


def lambda_settings(local_lambda, s3_bucket, **extra) -> dict:
    return {"endpoint_url": local_lambda.endpoint, "function_timeout": FUNCTION_TIMEOUT_S,
            "results_url": f"s3://{s3_bucket}/offload-results", "max_concurrency": 4, "offload": "always", **extra}


def connect(s3_server, local_lambda, s3_bucket, partitions: int | None = 2, **extra):
    return puffin.connect(target_partitions=partitions, s3=s3_options(s3_server), config=DISTRIBUTED,
                          lambda_=lambda_settings(local_lambda, s3_bucket, **extra))


def offload_lines(text: str) -> list[tuple[int, int, int]]:
    """(on Lambda, fragments, on Ray) of every offloaded stage of an EXPLAIN ANALYZE."""
    return [tuple(map(int, m)) for m in re.findall(r"Lambda: (\d+) of (\d+) fragments on \S+, Ray: (\d+)", text)]


def counter(text: str, name: str) -> int:
    return sum(int(v) for v in re.findall(rf"\b{name}=(\d+)", text))


@pytest.fixture(scope="module")
def ev(local_ray, s3_server, s3_bucket, local_lambda, events):
    c = connect(s3_server, local_lambda, s3_bucket)
    c.register("events", events)
    yield c
    c.close()


@pytest.fixture(scope="module")
def expected(local_ray, s3_server, events):
    c = puffin.connect(target_partitions=2, s3=s3_options(s3_server))
    c.register("events", events)
    return c.sql(AGG).arrow()


def check_offloaded(con, oracle, q: int, label: str) -> None:
    sql = tpch_query(q)
    assert_same_result(con.sql(sql).arrow(), oracle.sql(sql).to_arrow_table(), ordered=has_order_by(sql),
                       label=f"q{q} {label}")
    text = con.sql("EXPLAIN ANALYZE " + sql).render()
    stages = offload_lines(text)
    assert stages, text
    for on_lambda, total, on_ray in stages:
        assert on_lambda == total and on_ray == 0, text
    assert "fallback to Ray" not in text, text
    # a stage reading a table and an exchange (a join) is not a scan fragment: Ray runs it
    assert all("reads exchange inputs" in ln for ln in text.splitlines() if "Offload: none" in ln), text


@pytest.fixture(scope="module")
def sf01(tmp_path_factory, local_ray, s3_server, s3_bucket, local_lambda):
    """TPC-H SF0.1 on the S3 test server (lineitem and orders in 4 files, 1 MB row groups), its
    DuckDB oracle and a connection offloading every scan fragment (4 partitions)."""
    d = generate_tpch(str(tmp_path_factory.getbasetemp() / "tpch-sf0.1"), 0.1, parts=4, row_group_bytes="1MB")
    client = s3_server.client()
    for t in TABLES:
        for name in sorted(os.listdir(os.path.join(d, t))):
            client.upload_file(os.path.join(d, t, name), s3_bucket, f"tpch-sf0.1/{t}/{name}")
    oracle = duckdb.connect()
    c = connect(s3_server, local_lambda, s3_bucket, partitions=4)
    for t in TABLES:
        oracle.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{d}/{t}/*.parquet')")
        c.register(t, f"s3://{s3_bucket}/tpch-sf0.1/{t}")
    yield c, oracle
    c.close()


@pytest.mark.parametrize("q", range(1, 23), ids=lambda q: f"q{q:02d}")
def test_tpch_sf01_with_every_scan_on_lambda_matches_duckdb(sf01, q):
    check_offloaded(*sf01, q, "SF0.1 offloaded")


def test_plain_explain_says_the_decision(ev, local_ray, s3_server, s3_bucket, local_lambda, events):
    text = ev.sql("EXPLAIN " + AGG).render()
    assert "Offload: 2/2 fragments to Lambda (offload=always)" in text, text
    auto = connect(s3_server, local_lambda, s3_bucket, offload="auto", auto_factor=100)
    auto.register("events", events)
    text = auto.sql("EXPLAIN " + AGG).render()
    assert re.search(r"Offload: none, on Ray \(offload=auto: 2 scan fragments fit \d+ free Ray slots", text), text
    assert "Offload" not in ev.sql("EXPLAIN SELECT 42").render()  # nothing read: nothing to decide


def test_auto_offloads_when_fragments_outnumber_free_slots(local_ray, s3_server, s3_bucket, local_lambda, events,
                                                           expected):
    c = connect(s3_server, local_lambda, s3_bucket, offload="auto", auto_factor=0.01)
    c.register("events", events)
    assert_same_result(c.sql(AGG).arrow(), expected, ordered=True)
    text = c.sql("EXPLAIN ANALYZE " + AGG).render()
    assert offload_lines(text) == [(2, 2, 0)] and "offload=auto: 2 scan fragments > 0.01 x" in text, text


def test_default_is_todays_behaviour_without_the_bridge():
    code = ("import sys, puffin; c = puffin.connect(prestart=False); assert c.sql('SELECT 42').fetchall() == [(42,)]; "
            "assert 'boto3' not in sys.modules and not [m for m in sys.modules if 'lambda_bridge' in m]; "
            "assert 'Offload' not in c.sql('EXPLAIN SELECT 42').render()")
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("PUFFIN_LAMBDA_")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


def test_second_run_hits_the_warm_partition_cache(local_ray, s3_server, s3_bucket, local_lambda, events, expected):
    # Lambda (and the local service) hands an invocation to any idle warm instance of a function:
    # one at a time, the same most recently used instance serves both fragments, so the second
    # run finds both files in its cache (with several at once, which instance holds which file
    # would be up to chance)
    c = connect(s3_server, local_lambda, s3_bucket, max_concurrency=1)
    c.register("events", events)
    first = c.sql("EXPLAIN ANALYZE " + AGG).render()
    assert_same_result(c.sql(AGG).arrow(), expected, ordered=True)
    text = c.sql("EXPLAIN ANALYZE " + AGG).render()
    assert counter(first, "hits") + counter(first, "misses") == 2, first
    assert counter(text, "hits") == 2 and counter(text, "misses") == 0 and counter(text, "warm") == 2, text
    assert re.search(r"hit=\d+\.\dKB", text), text
    c.close()


@pytest.mark.parametrize("fault, reason", [("throttle", "throttled"), ("transient", "transient"),
                                           ("timeout", "timeout"), ("crash", "crashed")])
def test_injected_failures_fall_back_to_ray(ev, expected, faults, local_lambda, fault, reason):
    if fault == "timeout":
        local_lambda.control("config", {"function": "puffin-engine", "timeout": 1.0})
    retried = fault in ("throttle", "transient")
    n = 6 if retried else 1  # a 429 or a transient error is invoked 3 times (max_attempts): 2 fragments x 3
    faults(**{fault: n})
    with warnings.catch_warnings():
        warnings.simplefilter("error", LambdaFallbackWarning)  # transient: no warning
        assert_same_result(ev.sql(AGG).arrow(), expected, ordered=True, label=fault)
    faults(**{fault: n})
    text = ev.sql("EXPLAIN ANALYZE " + AGG).render()
    assert "fallback to Ray: task" in text and f": {reason}: " in text, text
    (on_lambda, total, on_ray), = offload_lines(text)
    assert on_ray >= 1 and on_lambda + on_ray == total, text
    if retried:  # every fragment met the fault 3 times: 2 retries each, counted, then Ray
        assert (on_lambda, on_ray) == (0, 2) and f"retries=4 ({reason}=4) fallbacks=2" in text, text
        assert text.count("[3 attempts]") == 2, text


def test_throttles_are_retried_on_lambda_before_any_fallback(ev, expected, faults):
    faults(throttle=2)  # at most 2 of one fragment's 3 attempts: every fragment answers on Lambda
    text = ev.sql("EXPLAIN ANALYZE " + AGG).render()
    assert offload_lines(text) == [(2, 2, 0)] and "fallback to Ray" not in text, text
    assert re.search(r"retries=2 \(throttled=2, backoff \d+ms\) fallbacks=0", text), text
    faults(service=1, transient=1)
    assert_same_result(ev.sql(AGG).arrow(), expected, ordered=True)


def test_a_missing_function_warns_once_and_runs_on_ray(local_ray, s3_server, s3_bucket, local_lambda, events,
                                                       expected):
    c = connect(s3_server, local_lambda, s3_bucket, function="no-such-function", offload="auto", auto_factor=0.01)
    c.register("events", events)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert_same_result(c.sql(AGG).arrow(), expected, ordered=True)
    mine = [w for w in caught if issubclass(w.category, LambdaFallbackWarning)]
    assert len(mine) == 1, [str(w.message) for w in caught]
    assert "no-such-function" in str(mine[0].message) and "not found" in str(mine[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        text = c.sql("EXPLAIN ANALYZE " + AGG).render()
    assert offload_lines(text) == [(0, 2, 2)] and text.count("fallback to Ray") == 2 and "not_found" in text, text


def test_a_missing_function_with_always_names_the_setting(local_ray, s3_server, s3_bucket, local_lambda,
                                                          events):
    c = connect(s3_server, local_lambda, s3_bucket, function="no-such-function")
    c.register("events", events)
    with pytest.raises(PuffinError, match=r"lambda setting 'function' with offload='always'.*no-such-function"):
        c.sql(AGG)
    # the one-task plan (run from this process, no Ray task) says the same
    one = puffin.connect(s3=s3_options(s3_server), lambda_=lambda_settings(local_lambda, s3_bucket,
                                                                            function="no-such-function"))
    one.register("events", events)
    with pytest.raises(PuffinError, match="lambda setting 'function'"):
        one.sql(AGG)


@pytest.mark.parametrize("bad, reason, setting", [("deny", "access_denied", "function"),
                                                   ("region", "wrong_region", "region")])
def test_a_denied_invoke_or_a_wrong_region_warns_once_and_runs_on_ray(local_ray, s3_server, s3_bucket, local_lambda,
                                                                     events, expected, faults, bad, reason, setting):
    extra = {"region": "eu-west-1"} if bad == "region" else {}  # the service is us-east-1's endpoint

    def arm():
        if bad == "deny":
            faults(deny=2)

    c = connect(s3_server, local_lambda, s3_bucket, offload="auto", auto_factor=0.01, **extra)
    c.register("events", events)
    arm()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert_same_result(c.sql(AGG).arrow(), expected, ordered=True)
    mine = [str(w.message) for w in caught if issubclass(w.category, LambdaFallbackWarning)]
    assert len(mine) == 1 and "function puffin-engine" in mine[0] and f"lambda setting '{setting}'" in mine[0], mine
    arm()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        text = c.sql("EXPLAIN ANALYZE " + AGG).render()
    assert offload_lines(text) == [(0, 2, 2)] and f"fallback to Ray: task 0: {reason}: " in text, text
    always = connect(s3_server, local_lambda, s3_bucket, **extra)
    always.register("events", events)
    arm()
    with pytest.raises(PuffinError, match=rf"lambda setting '{setting}' with offload='always': function puffin-engine"):
        always.sql(AGG)


def test_one_task_plans_go_to_lambda_from_this_process(local_ray, s3_server, s3_bucket, local_lambda, events,
                                                       expected, faults):
    c = connect(s3_server, local_lambda, s3_bucket, partitions=None)  # small inputs: one task, in-process
    c.register("events", events)
    assert_same_result(c.sql(AGG).arrow(), expected, ordered=True)
    text = c.sql("EXPLAIN ANALYZE " + AGG).render()
    assert offload_lines(text) == [(1, 1, 0)] and text.endswith("ran on Lambda from this process (one task)"), text
    faults(crash=1)
    text = c.sql("EXPLAIN ANALYZE " + AGG).render()
    assert "fallback to Ray: task 0: crashed" in text and text.endswith("after Lambda failed)"), text
    faults(crash=1)
    assert_same_result(c.sql(AGG).arrow(), expected, ordered=True)


def test_a_result_over_the_inline_limit_comes_back_through_s3(local_ray, s3_server, s3_bucket, local_lambda,
                                                              big):
    c = connect(s3_server, local_lambda, s3_bucket, partitions=1)
    c.register("big", big)
    t = c.sql("SELECT id, s FROM big").arrow()
    assert t.num_rows == 150_000 and sorted(t.column("id").to_pylist()) == list(range(150_000))
    text = c.sql("EXPLAIN ANALYZE SELECT id, s FROM big").render()
    assert "via S3=1" in text and "fallback to Ray" not in text, text


def test_the_benchmark_harness_runs_the_offloaded_configuration(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [sys.executable, "-m", "benchmarks.tpch", "--sf", "0.01", "--engines", "duckdb", "--lambda",
           "--queries", "1,6", "--reps", "1", "--warmup", "1", "--probe-runs", "0", "--no-cold", "--no-planning",
           "--no-first-query", "--out", str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PUFFIN_LAMBDA_"))}
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600, check=False, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    report = json.loads((tmp_path / "tpch_sf0.01.json").read_text())
    for q in ("q01", "q06"):
        for label in ("puffin-s3", "puffin-lambda"):
            assert report["queries"][q][label]["status"] == "ok", report["queries"][q][label]
        text = report["queries"][q]["puffin-lambda"]["explain"]["text"]
        assert offload_lines(text) == [(1, 1, 0)] and counter(text, "hits") >= 1, text  # warm after the warm-up
