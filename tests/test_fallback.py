"""The planner's contract with the user: everything DuckDB answers is answered, the common
shapes distributed, the rest in one DuckDB task that EXPLAIN names; nothing is dropped; plans
are typed and deterministic."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

import puffin
from puffin.planner import Binder, Settings, plan_query
from puffin.planner.logical import Native, walk
from puffin.sources import from_arrow
from puffin.testing import assert_same_result, has_order_by
from tests.conftest import tpch_query
from tests.test_planner import _plan

T = pa.table({"g": [1, 1, 2, 2, 3, None], "a": [5, 3, 2, 8, 1, 4], "b": [1.5, 2.5, None, 4.0, 5.0, 6.0],
              "Odd Name": ["x", "y", "z", "w", "v", "u"]})


def _plan_t(sql: str, partitions: int = 4):
    binder = Binder({"t": from_arrow("t", T)}, lambda *a: None)
    return plan_query(sql, "duckdb", binder, lambda used: Settings(partitions, True, 2))


def _fallback(qp) -> Native | None:
    return next((n for n in walk(qp.logical) if isinstance(n, Native)), None)


@pytest.mark.parametrize("q", range(1, 23), ids=lambda q: f"q{q:02d}")
def test_tpch_plans_distributed_without_fallback(tpch_dir, q):
    qp = _plan(tpch_dir, tpch_query(q))
    assert _fallback(qp) is None, _fallback(qp).reason


DISTRIBUTED = [
    "SELECT g, a, row_number() OVER (PARTITION BY g ORDER BY a) AS rn FROM t QUALIFY rn = 1",
    "SELECT g, sum(a) FROM t GROUP BY ALL ORDER BY ALL",
    "SELECT g, a, sum(b), grouping(g, a) FROM t GROUP BY CUBE (g, a)",
    "SELECT g, sum(a) FROM t GROUP BY ROLLUP (g)",
    "SELECT g, a, sum(b) FROM t GROUP BY GROUPING SETS ((g, a), (g), ())",
    'SELECT "Odd Name", count(*) FROM t GROUP BY 1',
    "SELECT * EXCLUDE (b) FROM t",
    "SELECT * REPLACE (a * 2 AS a) FROM t",
    "FROM t SELECT g, a",
    "SELECT g, a, sum(a) OVER (PARTITION BY g ORDER BY a ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS s FROM t",
    "SELECT g, a, avg(a) OVER (ORDER BY a RANGE BETWEEN 2 PRECEDING AND 2 FOLLOWING) AS s FROM t",
    "SELECT a, list_transform([a, a], lambda x: x + 1) AS l FROM t",
]

FALLBACK = [
    "SELECT * FROM range(10)",
    "SELECT * FROM generate_series(1, 3)",
    "SELECT DISTINCT ON (g) g, a FROM t ORDER BY g, a",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r",
    "SELECT t.g, l.x FROM t, LATERAL (SELECT t.a * 2 AS x) l",
    # named windows: a clause the builder does not consume, so the statement falls back
    "SELECT g, sum(a) OVER w AS s FROM t WINDOW w AS (PARTITION BY g ORDER BY a)",
    "SELECT * FROM (SELECT 1 AS a UNION ALL BY NAME SELECT 2 AS a)",
    "SELECT * FROM t LIMIT 50 %",  # a percentage LIMIT (it was read as LIMIT 50)
    "SELECT COLUMNS('a|b') FROM t",
    "SELECT max(COLUMNS(*)) FROM t",  # was one column named _col_0
    "SELECT t1.a, t2.a FROM t t1 ASOF JOIN t t2 ON t1.g = t2.g AND t1.a >= t2.a",
    "SELECT * FROM t t1 POSITIONAL JOIN t t2",
    "SELECT g, a FROM t WHERE a > ANY (SELECT a FROM t WHERE g = 2)",
    "SELECT g, (SELECT a FROM t x WHERE x.g = t.g ORDER BY a LIMIT 1) AS first_a FROM t",
    "SELECT u FROM t, unnest([1, 2]) AS r(u)",
    "PIVOT t ON g USING sum(a)",  # its columns are the values of g: known only once it ran
    "UNPIVOT (SELECT g, a, b FROM t) ON a, b INTO NAME k VALUE v",
]


@pytest.mark.parametrize("sql", DISTRIBUTED)
def test_constructs_planned_distributed(sql):
    assert _fallback(_plan_t(sql)) is None


@pytest.mark.parametrize("sql", FALLBACK)
def test_constructs_run_whole_in_duckdb_and_say_so(sql):
    fb = _fallback(_plan_t(sql))
    assert fb is not None and fb.reason


@pytest.fixture(scope="module")
def con(local_ray):
    c = puffin.connect(target_partitions=4, config={"broadcast_bytes": 0, "replicate_bytes": 0})
    c.register("t", T)
    return c


@pytest.mark.parametrize("sql", DISTRIBUTED + FALLBACK)
def test_answers_and_types_match_duckdb(con, sql):
    oracle = duckdb.connect()
    oracle.register("t", T)
    assert_same_result(con.sql(sql).arrow(), oracle.sql(sql).to_arrow_table(), has_order_by(sql), sql)


def test_explain_names_the_fallback_and_why(con):
    text = con.explain("SELECT DISTINCT ON (g) g, a FROM t ORDER BY g, a")
    assert "Fallback" in text and "DISTINCT" in text.upper()


def test_qualify_is_never_dropped(con):
    sql = "SELECT g, a, row_number() OVER (PARTITION BY g ORDER BY a) AS rn FROM t QUALIFY rn = 1"
    assert con.sql(sql).arrow().num_rows == 4  # one per g, NULL included; not all 6 rows


def test_explain_is_deterministic(tpch_dir):
    sql = "SELECT * FROM customer WHERE c_custkey NOT IN (SELECT o_custkey FROM orders) ORDER BY 1 LIMIT 3"
    from puffin.planner.explain import explain

    first = explain(_plan(tpch_dir, sql).stages)
    assert first == explain(_plan(tpch_dir, sql).stages)


def test_every_stage_is_typed(tpch_dir):
    for stage in _plan(tpch_dir, tpch_query(9)).stages:
        assert stage.schema.names == list(stage.plan.schema)
        for x in stage.inputs:
            assert x.types is not None and x.types.names == list(x.names)


def test_overflow_raises_as_in_duckdb(con):
    with pytest.raises(puffin.ExecutionError, match="Overflow"):
        con.sql("SELECT 9223372036854775807 + 1")
    with pytest.raises(puffin.ExecutionError, match="Overflow"):
        con.sql("SELECT CAST(2147483647 AS INTEGER) + CAST(1 AS INTEGER)")
