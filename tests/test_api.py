"""The public API: sources of every kind, results, dialects, EXPLAIN."""

from __future__ import annotations

import json
import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import puffin


@pytest.fixture(scope="module")
def con(local_ray):
    return puffin.connect(target_partitions=3)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("files")
    t = pa.table({"id": [1, 2, 3, 4], "city": ["oslo", "rome", "oslo", "lima"], "amount": [1.5, 2.5, 3.5, 4.5]})
    pq.write_table(t.slice(0, 2), d / "part-0.parquet")
    pq.write_table(t.slice(2), d / "part-1.parquet", row_group_size=1)
    t.to_pandas().to_csv(d / "sales.csv", index=False)
    with open(d / "sales.json", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in t.to_pylist())
    for year, vals in ((2023, [10, 20]), (2024, [30])):
        p = d / "hive" / f"year={year}"
        p.mkdir(parents=True)
        pq.write_table(pa.table({"v": vals}), p / "data.parquet")
    return d


def test_default_session_runs_a_literal_query(local_ray):
    assert puffin.sql("SELECT 42 AS answer").fetchall() == [(42,)]


def test_register_parquet_glob_directory_and_file(con, files):
    con.register("pglob", str(files / "part-*.parquet"))
    con.register("pfile", str(files / "part-1.parquet"))
    assert con.sql("SELECT sum(id) AS s FROM pglob").fetchall() == [(10,)]
    assert con.sql("SELECT count(*) AS n FROM pfile").fetchall() == [(2,)]


def test_register_csv_and_json(con, files):
    con.register("csv_sales", str(files / "sales.csv"))
    con.register("json_sales", str(files / "sales.json"))
    q = "SELECT city, sum(amount) AS total FROM {} GROUP BY city ORDER BY city"
    want = [("lima", 4.5), ("oslo", 5.0), ("rome", 2.5)]
    assert con.sql(q.format("csv_sales")).fetchall() == want
    assert con.sql(q.format("json_sales")).fetchall() == want
    # filters pyarrow can evaluate while reading, mixed with one it cannot
    f = "SELECT id FROM {} WHERE amount > 2 AND NOT (city = 'rome' AND upper(city) = 'ROME') ORDER BY id"
    assert con.sql(f.format("csv_sales")).fetchall() == [(3,), (4,)]
    assert con.sql(f.format("json_sales")).fetchall() == [(3,), (4,)]


def test_hive_partitioned_directory(con, files):
    con.register("hive", str(files / "hive"))
    rows = con.sql("SELECT year, sum(v) AS s FROM hive GROUP BY year ORDER BY year").fetchall()
    assert rows == [(2023, 30), (2024, 30)]
    assert con.sql("SELECT v FROM hive WHERE year = 2024").fetchall() == [(30,)]


def test_register_arrow_and_pandas(con):
    con.register("arrow_t", pa.table({"x": list(range(100))}))
    con.register("pandas_t", pd.DataFrame({"x": list(range(50)), "y": ["a", "b"] * 25}))
    assert con.sql("SELECT count(*) AS n FROM arrow_t a JOIN pandas_t p ON a.x = p.x").fetchall() == [(50,)]


def test_direct_file_references_and_readers(con, files):
    glob = str(files / "part-*.parquet")
    assert con.sql(f"SELECT count(*) AS n FROM '{glob}'").fetchall() == [(4,)]
    assert con.sql(f"SELECT max(id) AS m FROM read_parquet('{glob}')").fetchall() == [(4,)]
    assert con.sql(f"SELECT count(*) AS n FROM read_csv('{files / 'sales.csv'}')").fetchall() == [(4,)]
    assert con.sql(f"SELECT min(amount) AS m FROM read_json('{files / 'sales.json'}')").fetchall() == [(1.5,)]


def test_result_conversions_and_printing(con):
    r = con.sql("SELECT 1 AS a, 'x' AS b UNION ALL SELECT 2, 'y' ORDER BY a")
    assert r.arrow().column_names == ["a", "b"]
    assert list(r.to_pandas()["a"]) == [1, 2]
    assert r.fetchall() == [(1, "x"), (2, "y")]
    text = str(r)
    header = text.splitlines()[1]
    assert text.startswith("┌") and header.split("│")[1].strip() == "a" and "int32" in text and "varchar" in text


def test_other_dialects_transpile(con):
    con.register("t", pa.table({"d": ["2024-01-05", "2024-02-10"], "n": [3, 4]}))
    r = con.sql("SELECT IFF(n > 3, 'big', 'small') AS size FROM t ORDER BY n", dialect="snowflake")
    assert r.fetchall() == [("small",), ("big",)]
    r = con.sql("SELECT `n` FROM t WHERE n = 4", dialect="mysql")
    assert r.fetchall() == [(4,)]


def test_explain_shows_stages_and_explain_analyze_shows_work(con):
    con.register("big", pa.table({"k": [i % 10 for i in range(1000)], "v": list(range(1000))}))
    plan = con.sql("EXPLAIN SELECT k, sum(v) FROM big GROUP BY k").render()
    assert "Stage" in plan and "Aggregate(partial)" in plan and "Aggregate(final)" in plan
    assert "hash(" in plan
    analyzed = con.sql("EXPLAIN ANALYZE SELECT k, sum(v) FROM big GROUP BY k").render()
    assert "rows in=1000" in analyzed and "task time" in analyzed


def test_bad_arguments_are_puffin_errors(local_ray):
    with pytest.raises(puffin.PuffinError, match="target_partitions"):
        puffin.connect(target_partitions=0)
    with pytest.raises(puffin.PuffinError, match="valid: broadcast_bytes"):
        puffin.connect(config={"nope": 1})
    con = puffin.connect()
    with pytest.raises(puffin.NotSupportedError, match="cannot register"):
        con.register("x", 42)
    with pytest.raises(puffin.BindError, match="no files found"):
        con.register("x", os.path.join("nowhere", "*.parquet"))


def test_repeated_queries_reuse_the_plan_until_tables_change(local_ray):
    con = puffin.connect()
    con.register("t", pa.table({"x": [1, 2, 3]}))
    q = "SELECT sum(x) AS s FROM t"
    assert con.sql(q).fetchall() == [(6,)]
    assert con.sql(q).fetchall() == [(6,)] and len(con._plans) == 1
    con.register("t", pa.table({"x": [10, 20]}))  # same name, new data: the old plan must not serve
    assert con.sql(q).fetchall() == [(30,)]


def test_direct_file_references_see_new_files(con, tmp_path):
    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "a.parquet")
    q = f"SELECT sum(x) AS s FROM '{tmp_path}/*.parquet'"
    assert con.sql(q).fetchall() == [(3,)]
    pq.write_table(pa.table({"x": [10]}), tmp_path / "b.parquet")
    assert con.sql(q).fetchall() == [(13,)]
