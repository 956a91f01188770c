"""SQL corpora checked against DuckDB on the same in-memory tables, at 1 and 4 partitions (the
latter with every exchange a shuffle and every ORDER BY range-partitioned):

- subqueries.sql: correlated and uncorrelated subqueries of every kind and place;
- grouping.sql: ROLLUP/CUBE/GROUPING SETS, QUALIFY, DISTINCT ON, window frames, star modifiers,
  table functions, WITH RECURSIVE, LATERAL, nested types, NULL/TIME/INTERVAL keys, quoted
  identifiers and user columns named like the engine's internal ones.

Statements are separated by ``;`` at the end of a line; ``--`` lines are comments. A statement
whose outermost query orders is compared in order (ties on the ORDER BY keys in any order).
Results must match DuckDB's values, column names and types.
"""

from __future__ import annotations

import os

import duckdb
import pyarrow as pa
import pytest

import puffin
from puffin.testing import assert_same_result, has_order_by
from tests.sql.test_features import _tables as feature_tables

HERE = os.path.dirname(__file__)
CORPORA = ("subqueries.sql", "grouping.sql")
FORCED = {"broadcast_bytes": 0, "replicate_bytes": 0, "range_sort_rows": 0}


def statements(path: str) -> list[str]:
    with open(path) as f:
        text = "\n".join(ln for ln in f.read().splitlines() if not ln.lstrip().startswith("--"))
    parts = (s.strip().rstrip(";").strip() for s in text.split(";\n"))
    return [s for s in parts if s]


def corpus_tables() -> dict[str, pa.Table]:
    """The feature tables (emp, dept, sales, nums) and small tables made by DuckDB, so their Arrow
    types are DuckDB's own (INTEGER is int32, INTERVAL month_day_nano, ...)."""
    con = duckdb.connect()

    def q(sql: str) -> pa.Table:
        return con.sql(sql).to_arrow_table()

    tables = dict(feature_tables())
    # obs: k groups (one NULL group), x with two outliers, y a second measure
    tables["obs"] = q("""
        SELECT CASE WHEN i % 11 = 10 THEN NULL ELSE (i % 5)::INTEGER END AS k,
               CASE WHEN i IN (13, 44) THEN 500.0 ELSE ((i * 37) % 101) / 7.0 END AS x,
               (i * 13 % 17)::INTEGER AS y
        FROM range(60) r(i)""")
    # t: (g, a) unique, so row_number() over (PARTITION BY g ORDER BY a) is deterministic
    tables["t"] = q("""
        SELECT (i % 4)::INTEGER AS g, ((i * 7) % 20)::INTEGER AS a, chr(97 + (i % 7)::INTEGER) AS b,
               (i * 1.5)::DOUBLE AS x, DATE '2024-01-01' + (i * 3)::INTEGER AS d
        FROM range(20) r(i)""")
    tables["nk"] = q("SELECT * FROM (VALUES (1, 10), (2, 20), (NULL, 30), (2, 40), (NULL, 50), (3, 60)) v(k, v)")
    tables["nk2"] = q("SELECT * FROM (VALUES (2, 'b'), (NULL, 'n1'), (3, 'c'), (4, 'd'), (NULL, 'n2')) v(k, w)")
    tables["tk"] = q("""
        SELECT * FROM (VALUES
            (TIME '08:00:00', INTERVAL 1 DAY, TIMESTAMP '2024-01-01 08:00:00', 1),
            (TIME '08:00:00', INTERVAL 24 HOUR, TIMESTAMP '2024-01-01 08:00:00', 2),
            (TIME '12:30:15.5', INTERVAL 1 MONTH, TIMESTAMP '2024-01-02 12:30:15.5', 3),
            (TIME '12:30:15.5', INTERVAL 30 DAY, TIMESTAMP '2024-01-02 12:30:15.5', 4),
            (TIME '23:59:59', INTERVAL 90 MINUTE, TIMESTAMP '2024-02-29 23:59:59', 5),
            (NULL, NULL, NULL, 6),
            (TIME '00:00:00', INTERVAL 2 HOUR, TIMESTAMP '2024-03-01 00:00:00', 7)
        ) v(t, iv, ts, v)""")
    tables["nested"] = q("""
        SELECT * FROM (VALUES
            (1, [1, 2], {'a': 1, 'b': 'x'}, MAP {'k': 1}),
            (2, [1, 2], {'a': 1, 'b': 'x'}, MAP {'k': 1}),
            (3, [3], {'a': 2, 'b': 'y'}, MAP {'k': 2, 'j': 3}),
            (4, [], {'a': NULL, 'b': 'z'}, MAP {}),
            (5, NULL, NULL, NULL),
            (6, [3], {'a': 2, 'b': 'y'}, MAP {'k': 2, 'j': 3}),
            (7, [NULL, 1], {'a': 3, 'b': NULL}, MAP {'k': NULL})
        ) v(id, l, s, m)""")
    tables["tree"] = q("""
        SELECT * FROM (VALUES (1, NULL), (2, 1), (3, 1), (4, 2), (5, 4), (6, 3), (7, NULL), (8, 7))
        v(id, parent)""")
    tables["odd"] = q("""
        SELECT * FROM (VALUES
            ('alpha', 1, 'x', 10, 'café', 5, 100),
            ('beta', 2, 'y', 20, 'naïve', 6, 200),
            ('alpha', 3, 'y', 30, 'café', 7, 300),
            ('gamma', 4, 'x', 40, 'über', 8, 400)
        ) v("Odd Name", "a""b", "select", "X", "naïve", "日本", "from")""")
    tables["internals"] = q("""
        SELECT (i % 3)::INTEGER AS __k0, (i * 2)::INTEGER AS __a0, 1 AS __one, (i % 2)::INTEGER AS __pid,
               (10 - i)::INTEGER AS __bounds, (i * i)::INTEGER AS __w0, (i % 4)::INTEGER AS __o0,
               (i + 100)::INTEGER AS __gid, (i % 2)::INTEGER AS __g0, i::INTEGER AS __in0,
               (i % 5)::INTEGER AS __sj0_0, 'v' || i AS "__src_0"
        FROM range(12) r(i)""")
    tables["My Table"] = q("SELECT * FROM (VALUES (1, 'one'), (2, 'two')) v(id, label)")
    tables["order"] = q("SELECT * FROM (VALUES (1, 5), (2, 7), (3, 5)) v(id, qty)")
    tables["__t"] = q("SELECT * FROM (VALUES (1, 'a'), (2, 'b')) v(__gid, __t)")
    return tables


@pytest.fixture(scope="module")
def tables() -> dict[str, pa.Table]:
    return corpus_tables()


@pytest.fixture(scope="module")
def oracle(tables):
    con = duckdb.connect()
    for name, t in tables.items():
        con.register(name, t)
    return con


@pytest.fixture(scope="module", params=[1, 4], ids=["p1", "p4"])
def con(request, local_ray, tables):
    n = request.param
    c = puffin.connect(target_partitions=n, config=FORCED if n > 1 else None)
    for name, t in tables.items():
        c.register(name, t)
    return c


CASES = [(corpus, i, sql) for corpus in CORPORA for i, sql in enumerate(statements(os.path.join(HERE, corpus)))]


@pytest.mark.parametrize(("corpus", "i", "sql"), CASES, ids=[f"{c.split('.')[0]}-{i:02d}" for c, i, _ in CASES])
def test_corpus_statement_matches_duckdb(con, oracle, corpus, i, sql):
    want = oracle.sql(sql).to_arrow_table()
    got = con.sql(sql, timeout=120).arrow()
    assert_same_result(got, want, ordered=has_order_by(sql), label=f"{corpus} #{i}: {sql}", sql=sql)
