"""LambdaSettings from dicts and the environment; stable routing of files to a function group."""

from __future__ import annotations

import collections

import pytest

from puffin.errors import PuffinError
from puffin.lambda_bridge import HashRing, LambdaSettings, auto_offload
from puffin.lambda_bridge.routing import routing_key


def test_environment_then_overrides():
    env = {"PUFFIN_LAMBDA_FUNCTION": "engine", "PUFFIN_LAMBDA_REGION": "eu-west-1", "PUFFIN_LAMBDA_OFFLOAD": "Auto",
           "PUFFIN_LAMBDA_MAX_CONCURRENCY": "500", "AWS_ENDPOINT_URL_LAMBDA": "http://127.0.0.1:9001",
           "PUFFIN_LAMBDA_GROUP": "engine:w0, engine:w1"}
    s = LambdaSettings.resolve({"max_concurrency": 20}, env=env)
    assert (s.function, s.region, s.offload, s.max_concurrency) == ("engine", "eu-west-1", "auto", 20)
    assert s.endpoint_url == "http://127.0.0.1:9001" and s.forward_credentials  # a local service
    assert s.members == (("engine", "w0"), ("engine", "w1"))
    aws = LambdaSettings.resolve({}, env={"AWS_REGION": "us-west-2"})
    assert aws.region == "us-west-2" and not aws.forward_credentials and aws.offload == "never"
    arn = "arn:aws:lambda:us-east-1:123456789012:function:puffin-engine:live"
    assert LambdaSettings.resolve({"function": arn}, env={}).members == ((arn.rsplit(":", 1)[0], "live"),)


@pytest.mark.parametrize("given, env, needle", [
    ({"offload": "sometimes"}, {}, "'offload' (PUFFIN_LAMBDA_OFFLOAD)"),
    ({}, {"PUFFIN_LAMBDA_MAX_CONCURRENCY": "lots"}, "'max_concurrency' (from PUFFIN_LAMBDA_MAX_CONCURRENCY)"),
    ({"region": "moon-1"}, {}, "'region'"),
    ({"function": "bad name!"}, {}, "'function'"),
    ({"results_url": "/tmp/x"}, {}, "'results_url'"),
    ({"mode": "event"}, {}, "'results_url'"),
    ({"function_timeout": 901}, {}, "'function_timeout'"),
    ({"endpoint_url": "localhost:9001"}, {}, "'endpoint_url'"),
    ({"functon": "x"}, {}, "unknown lambda setting"),
])
def test_validation_names_the_setting(given, env, needle):
    with pytest.raises(PuffinError, match="setting") as e:
        LambdaSettings.resolve(given, env=env)
    assert needle in str(e.value)


def test_consistent_hashing_is_stable_and_spreads():
    members = [("puffin-engine", f"g{i}") for i in range(4)]
    ring = HashRing(members)
    files = [f"bucket/t/part-{i}.parquet" for i in range(2000)]
    placed = {f: ring.member(f) for f in files}
    assert placed == {f: HashRing(members).member(f) for f in files}  # same in every process
    counts = collections.Counter(placed.values())
    assert len(counts) == 4 and min(counts.values()) > 2000 / 4 * 0.6
    grown = HashRing([*members, ("puffin-engine", "g4")])
    moved = sum(placed[f] != grown.member(f) for f in files)
    assert moved < 2000 * 0.35  # about 1/5 move, not all


def test_routing_key_is_the_heaviest_file(con):
    from tests.lambda_bridge.conftest import scan_fragments

    for f in scan_fragments(con, "SELECT grp, count(*) FROM events GROUP BY grp"):
        assert routing_key(f) in {u.path for r in f.scans for u in r.units}


def test_auto_policy_says_why():
    go, why = auto_offload(100, 8, 2.0)
    assert go and "100 scan fragments > 2 x 8 free Ray slots" in why
    assert not auto_offload(10, 8, 2.0)[0]
