"""Every scan fragment of the 22 TPC-H queries over S3 answers the same on the Engine function
(which reads through its warm-partition cache, DuckDB-native on the local copies) as run_fragment
run here (pyarrow reading S3)."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

import puffin
from puffin.demo import TABLES
from puffin.operators.fragment import run_fragment
from tests.conftest import tpch_query
from tests.lambda_bridge.conftest import new_query_id, s3_options, scan_fragments


@pytest.fixture(scope="module")
def tpch_con(s3_server, s3_tpch):
    c = puffin.connect(target_partitions=2, s3=s3_options(s3_server), prestart=False)
    for t in TABLES:
        c.register(t, f"{s3_tpch}/{t}")
    return c


def _rows(t: pa.Table) -> list[tuple]:
    def norm(v):
        return round(v, 6) if isinstance(v, float) and math.isfinite(v) else v

    return sorted((tuple(norm(v) for v in r.values()) for r in t.to_pylist()), key=repr)


@pytest.mark.parametrize("q", range(1, 23))
def test_tpch_scan_fragments_on_lambda(tpch_con, invoker, q):
    qid = new_query_id()
    for f in scan_fragments(tpch_con, tpch_query(q)):
        parts, _, info = invoker.invoke(f, qid)
        assert info.cache_hits + info.cache_misses >= 1 and info.cache_bypassed == 0  # read via the cache
        local, _ = run_fragment(f, {}, None)
        assert len(parts) == len(local)
        for a, b in zip(parts, local):
            assert a.schema.equals(b.schema), (q, f.stage_id, f.task)
            assert _rows(a) == _rows(b), (q, f.stage_id, f.task)
