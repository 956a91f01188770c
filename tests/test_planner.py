"""Planner behaviour that results alone do not show: pushdown, join order, exchanges, the
fragment contract, and which modules may import Ray."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow as pa

import puffin
from puffin import sources
from puffin.demo import TABLES
from puffin.operators.fragment import Fragment, run_fragment
from puffin.operators.scan import ScanRead
from puffin.planner import Binder, Settings, plan_query
from puffin.planner.logical import Aggregate, Join, Scan, walk
from puffin.sources import from_arrow
from tests.conftest import tpch_query


def _binder(tpch_dir):
    tables = {t: sources.from_path(t, f"{tpch_dir}/{t}") for t in TABLES}
    return Binder(tables, lambda loc, kind, opts: sources.from_path(str(loc), loc, kind, opts))


def _plan(tpch_dir, sql, partitions=8, **config):
    return plan_query(sql, "duckdb", _binder(tpch_dir), lambda used: Settings(partitions, True, 2, **config))


def test_filters_and_projections_reach_the_scans(tpch_dir):
    qp = _plan(tpch_dir, tpch_query(6))
    scans = [n for n in walk(qp.logical) if isinstance(n, Scan)]
    assert len(scans) == 1
    assert set(scans[0].columns) == {"l_shipdate", "l_discount", "l_quantity", "l_extendedprice"}
    assert len(scans[0].filters) >= 3


def test_joins_start_from_the_largest_input_and_avoid_cross_joins(tpch_dir):
    qp = _plan(tpch_dir, tpch_query(5))
    joins = [n for n in walk(qp.logical) if isinstance(n, Join)]
    assert all(j.kind == "inner" and j.condition is not None for j in joins)
    deepest = joins[-1]
    assert isinstance(deepest.left, Scan) and deepest.left.source.name == "lineitem"


def test_q5_explain_shows_hash_joins_and_split_aggregate(tpch_dir):
    qp = _plan(tpch_dir, tpch_query(5), broadcast_bytes=0, replicate_bytes=0)
    from puffin.planner.explain import explain

    text = explain(qp.stages)
    assert "Exchange <- stage" in text and "(hash(" in text
    assert "Aggregate(partial)" in text and "Aggregate(final)" in text
    phases = {n.phase for st in qp.stages for n in walk(st.plan) if isinstance(n, Aggregate)}
    assert phases == {"partial", "final"}


def test_q5_broadcasts_small_sides_by_default(tpch_dir):
    from puffin.planner.explain import explain

    text = explain(_plan(tpch_dir, tpch_query(5), replicate_bytes=0).stages)
    assert "(broadcast)" in text


def test_tiny_plans_run_as_one_stage(tpch_dir):
    qp = _plan(tpch_dir, tpch_query(3), partitions=1)
    assert len(qp.stages) == 1 and qp.stages[0].tasks == 1


def test_fragment_runs_without_ray():
    src = from_arrow("t", pa.table({"k": [1, 2, 1, 3], "v": [10, 20, 30, 40]}))
    read = ScanRead("scan_0", "arrow", src.schema, ("k", "v"), src.units, (), src.source_id)
    frag = Fragment(0, 0, 'SELECT k, sum(v) AS s FROM scan_0 GROUP BY k', (read,), output_mode="hash",
                    output_keys=("k",), output_partitions=2)
    parts, metrics = run_fragment(frag, {}, {src.source_id: src.table})
    assert len(parts) == 2 and metrics.rows_in == 4 and metrics.rows_out == 3
    merged = sorted(r for p in parts for r in zip(*[c.to_pylist() for c in p.columns]))
    assert merged == [(1, 40), (2, 20), (3, 40)]
    # equal keys always land in the same partition, whatever their integer width
    wide = pa.table({"k": pa.array([1, 2, 3], pa.int64())})
    narrow = pa.table({"k": pa.array([1, 2, 3], pa.int32())})
    from puffin.operators.exchange import hash_partition
    from puffin.operators.fragment import database

    cur = database().cursor()
    a = [p.column("k").to_pylist() for p in hash_partition(cur, wide, ("k",), 4)]
    b = [p.column("k").to_pylist() for p in hash_partition(cur, narrow, ("k",), 4)]
    assert a == b


def test_only_the_runtime_imports_ray():
    code = (
        "import sys, puffin, puffin.planner, puffin.operators.fragment, puffin.demo;"
        "import puffin.planner.physical, puffin.planner.explain;"
        "print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    root = os.path.dirname(os.path.dirname(puffin.__file__))
    grep = subprocess.run(["grep", "-rlE", r"^\s*(import ray|from ray)", "puffin"], capture_output=True,
                          text=True, cwd=root, check=False)
    assert grep.stdout.split() == ["puffin/runtime.py"]


def test_large_order_by_is_range_partitioned(tpch_dir):
    from puffin.planner.explain import explain

    sql = "SELECT l_orderkey, l_linenumber FROM lineitem ORDER BY l_orderkey DESC, l_linenumber"
    text = explain(_plan(tpch_dir, sql, partitions=4, range_sort_rows=0).stages)
    assert "range x 4" in text and "forward + sample(" in text and "QUANTILE_DISC" in text
    small = explain(_plan(tpch_dir, sql, partitions=4).stages)  # 60k rows: sort per task, merge
    assert "range x" not in small and small.count("Sort") == 2


def test_exists_with_an_inequality_becomes_semi_and_anti_joins(tpch_dir):
    qp = _plan(tpch_dir, tpch_query(21))
    kinds = sorted(j.kind for j in walk(qp.logical) if isinstance(j, Join))
    assert "semi" in kinds and "anti" in kinds
    text = " ".join(str(j.condition) for j in walk(qp.logical) if isinstance(j, Join) and j.kind in ("semi", "anti"))
    assert "<>" in text and "ARRAY" not in text.upper()


def test_aggregates_joined_with_a_small_side_are_semi_join_reduced(tpch_dir):
    qp = _plan(tpch_dir, tpch_query(17))
    aggs = [n for n in walk(qp.logical) if isinstance(n, Aggregate)]
    reduced = [a for a in aggs if isinstance(a.child, Join) and a.child.kind == "semi"]
    assert reduced, "the AVG(l_quantity) GROUP BY l_partkey input was not filtered by part"
    probe = reduced[0].child.right
    assert any(isinstance(n, Scan) and n.source.name == "part" for n in walk(probe))


def test_reader_filters_are_implied_by_the_sql_filter_even_under_not():
    import pyarrow.compute as pc  # noqa: F401
    import sqlglot

    from puffin.planner.predicates import arrow_backend, translate

    t = pa.table({"a": [1, 2, 3, 4, None], "b": ["x", "y", "x", "y", "x"]})

    def keep(sql):
        e = sqlglot.parse_one(sql, read="duckdb")
        expr = translate([e], {"t.a": "a", "t.b": "b"}, arrow_backend())
        return sorted(r for r in (t.filter(expr) if expr is not None else t).column("a").to_pylist() if r is not None)

    assert keep('"t.a" > 2') == [3, 4]
    assert keep('"t.a" BETWEEN 2 AND 3 AND "t.b" = \'x\'') == [3]
    # upper("t.b") cannot be translated: the AND keeps only its other half (a weaker filter)...
    assert keep('"t.a" > 2 AND upper("t.b") = \'X\'') == [3, 4]
    # ...which must not be negated: NOT (a > 2 AND ...) is not NOT (a > 2)
    assert keep('NOT ("t.a" > 2 AND upper("t.b") = \'X\')') == [1, 2, 3, 4]
    assert keep('NOT ("t.a" > 2 OR "t.b" = \'y\')') == [1]
