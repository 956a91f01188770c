"""Failures the runtime falls back from: throttles, timeouts, crashes, bad configuration, limits."""

from __future__ import annotations

import json
import os

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from puffin.errors import PuffinError
from puffin.lambda_bridge import Invoker, LambdaUnavailable
from puffin.lambda_bridge.errors import from_client_error
from puffin.lambda_bridge.payload import ASYNC_LIMIT, SYNC_LIMIT
from tests.lambda_bridge.conftest import new_query_id, scan_fragments

AGG = "SELECT grp, count(*) AS n FROM events GROUP BY grp"


def _raw_client(local_lambda):
    return boto3.client("lambda", endpoint_url=local_lambda.endpoint, region_name="us-east-1",
                        aws_access_key_id="k", aws_secret_access_key="s",
                        config=Config(retries={"total_max_attempts": 1}))


@pytest.mark.parametrize("fault, reason", [("throttle", "throttled"), ("crash", "crashed"),
                                           ("error", "function_error")])
def test_injected_failures_raise_the_typed_fallback(con, invoker, faults, fault, reason):
    f = scan_fragments(con, AGG)[0]
    # the invoker retries a 429 (every attempt must meet it), never a crash or an untyped raise
    faults(**{fault: invoker.settings.max_attempts if fault == "throttle" else 1})
    with pytest.raises(LambdaUnavailable) as e:
        invoker.invoke(f, new_query_id())
    assert e.value.reason == reason and not e.value.permanent
    assert e.value.attempts == (invoker.settings.max_attempts if fault == "throttle" else 1)
    assert "puffin-engine" in str(e.value)
    parts, _, _ = invoker.invoke(f, new_query_id())  # and the service serves the next one
    assert parts[0].num_rows >= 0


def test_a_throttle_is_retried_within_the_bound(con, invoker, faults):
    f = scan_fragments(con, AGG)[0]
    faults(throttle=1)
    _, _, info = invoker.invoke(f, new_query_id())  # max_attempts=3: the second attempt runs
    assert info.retries == 1 and info.retried == {"throttled": 1}


def test_timeout_kills_the_environment_and_falls_back(con, invoker, faults, local_lambda):
    f = scan_fragments(con, AGG)[0]
    local_lambda.control("config", {"function": "puffin-engine", "timeout": 1.0})
    faults(timeout=1)
    with pytest.raises(LambdaUnavailable) as e:
        invoker.invoke(f, new_query_id())
    assert e.value.reason == "timeout" and "Task timed out after 1.00 seconds" in str(e.value)


def test_over_the_concurrency_limit_is_a_429(con, invoker, faults, local_lambda):
    local_lambda.control("config", {"function": "puffin-engine", "concurrency": 0})
    with pytest.raises(LambdaUnavailable) as e:
        invoker.invoke(scan_fragments(con, AGG)[0], new_query_id())
    assert e.value.reason == "throttled" and "TooManyRequestsException" in str(e.value)
    assert local_lambda.stats()["throttled"] >= 1


def test_a_missing_function_is_named(con, invoker, settings, s3_server):
    inv = Invoker(settings.replace(function="no-such-function"), invoker.s3)
    with pytest.raises(LambdaUnavailable) as e:
        inv.invoke(scan_fragments(con, AGG)[0], new_query_id())
    assert e.value.reason == "not_found" and e.value.permanent
    assert "no-such-function" in str(e.value) and "ResourceNotFoundException" in str(e.value)
    err = e.value.setting_error()  # what offload="always" raises
    assert isinstance(err, PuffinError) and "lambda setting 'function'" in str(err) and "no-such-function" in str(err)


def test_a_denied_invoke_is_permanent(con, invoker, faults):
    faults(deny=1)
    with pytest.raises(LambdaUnavailable) as e:
        invoker.invoke(scan_fragments(con, AGG)[0], new_query_id())
    assert e.value.reason == "access_denied" and e.value.permanent and "lambda:InvokeFunction" in str(e.value)
    assert "lambda setting 'function'" in str(e.value.setting_error())


def test_a_wrong_region_is_permanent_and_names_the_setting(con, invoker, settings):
    inv = Invoker(settings.replace(region="eu-west-1"), invoker.s3)  # the service is us-east-1's endpoint
    try:
        with pytest.raises(LambdaUnavailable) as e:
            inv.invoke(scan_fragments(con, AGG)[0], new_query_id())
    finally:
        inv.close()
    assert e.value.reason == "wrong_region" and e.value.permanent and "'eu-west-1'" in str(e.value)
    assert "lambda setting 'region' with offload='always'" in str(e.value.setting_error())


def test_an_unreachable_endpoint_is_permanent(con, invoker, settings):
    inv = Invoker(settings.replace(endpoint_url="http://127.0.0.1:9", max_attempts=1), invoker.s3)
    with pytest.raises(LambdaUnavailable) as e:
        inv.invoke(scan_fragments(con, AGG)[0], new_query_id())
    assert e.value.reason == "endpoint" and e.value.permanent and "127.0.0.1:9" in str(e.value)


def test_payload_limits(local_lambda, con, invoker):
    client = _raw_client(local_lambda)
    with pytest.raises(ClientError) as e:
        client.invoke(FunctionName="puffin-engine", Payload=b"x" * (SYNC_LIMIT + 1))
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert from_client_error(e.value, "puffin-engine").reason == "payload_too_large"
    with pytest.raises(ClientError) as e:
        client.invoke(FunctionName="puffin-engine", InvocationType="Event", Payload=b"x" * (ASYNC_LIMIT + 1))
    assert e.value.response["Error"]["Code"] == "RequestTooLargeException"
    # through the invoker: an Event request over 256 KB is classified, not lost
    import dataclasses

    f = scan_fragments(con, AGG)[0]
    fat = dataclasses.replace(f, sql=f.sql + " -- " + os.urandom(400_000).hex())
    invoker.settings = invoker.settings.replace(mode="event")
    with pytest.raises(LambdaUnavailable) as err:
        invoker.invoke(fat, new_query_id())
    assert err.value.reason == "payload_too_large"


def test_handler_errors_have_the_aws_shape(local_lambda):
    out = _raw_client(local_lambda).invoke(FunctionName="puffin-engine", Payload=b'{"not": "puffin"}')
    assert out["FunctionError"] == "Unhandled"
    doc = json.loads(out["Payload"].read())
    assert set(doc) >= {"errorMessage", "errorType", "stackTrace"} and doc["errorType"] == "PayloadError"


def test_qualifiers_have_their_own_warm_pools(local_lambda):
    client = _raw_client(local_lambda)
    for q in ("g0", "g1"):
        out = client.invoke(FunctionName="puffin-engine", Qualifier=q, Payload=b"{}")
        assert out["FunctionError"] == "Unhandled"
    idle = local_lambda.stats()["idle"]
    assert idle.get("puffin-engine:g0") == 1 and idle.get("puffin-engine:g1") == 1


def test_fragments_lambda_cannot_run_are_refused_before_invoking(con, invoker, s3_server):
    import pyarrow as pa

    from tests.lambda_bridge.conftest import fragments

    frs = fragments(con, "SELECT grp, count(*) AS n FROM events GROUP BY grp")
    merge = next(f for st in frs.values() for f in st if f.inputs)
    with pytest.raises(LambdaUnavailable) as e:
        invoker.invoke(merge, new_query_id())
    assert e.value.reason == "unsupported" and "exchange inputs" in str(e.value)
    con.register("mem", pa.table({"x": [1, 2, 3]}))
    try:
        f = next(f for st in fragments(con, "SELECT sum(x) FROM mem").values() for f in st if f.scans)
        with pytest.raises(LambdaUnavailable, match="in-memory table"):
            invoker.invoke(f, new_query_id())
    finally:
        con.unregister("mem")
