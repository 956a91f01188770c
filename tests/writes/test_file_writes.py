"""COPY ... TO and CREATE TABLE on a path: what Puffin writes reads back as DuckDB's own COPY of the
same query, on local disk and on the S3 server, from several layouts and partition counts; a
failure leaves nothing visible; bad targets are refused before anything is written."""

from __future__ import annotations

import os
import subprocess
import sys

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import puffin
from puffin.demo import TABLES
from puffin.errors import ExecutionError, NotSupportedError, PuffinError
from puffin.testing import assert_same_result

QUERY = ("SELECT l_orderkey, l_linenumber, l_returnflag, l_quantity, l_extendedprice, l_shipdate, "
         "l_comment FROM lineitem WHERE l_quantity > 10")


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, names in os.walk(root) for f in names)


@pytest.fixture(scope="module", params=[None, 1, 4], ids=lambda p: f"p{p}")
def con(request, local_ray, tpch_dir):
    c = puffin.connect(target_partitions=request.param)
    for t in TABLES:
        c.register(t, f"{tpch_dir}/{t}")
    return c


def test_copy_to_one_parquet_file_reads_back_as_duckdb(con, oracle, tmp_path):
    out = tmp_path / "out.parquet"
    res = con.sql(f"COPY ({QUERY}) TO '{out}' (FORMAT parquet)").arrow()
    expected = oracle.sql(QUERY).to_arrow_table()
    assert res.column("rows_written").to_pylist() == [expected.num_rows]
    assert _files(tmp_path) == ["out.parquet"]  # no staging left beside it
    back = duckdb.sql(f"SELECT * FROM '{out}'").to_arrow_table()
    assert_same_result(back, expected, ordered=False)


def test_copy_ordered_query_to_one_file_keeps_the_order(con, oracle, tmp_path):
    q = QUERY + " ORDER BY l_extendedprice DESC, l_orderkey, l_linenumber"
    out = tmp_path / "sorted.parquet"
    con.sql(f"COPY ({q}) TO '{out}'")
    assert_same_result(duckdb.sql(f"SELECT * FROM '{out}'").to_arrow_table(), oracle.sql(q).to_arrow_table(),
                       ordered=True)


def test_partition_by_directory_round_trips(con, oracle, tmp_path):
    out = tmp_path / "by_flag"
    con.sql(f"COPY ({QUERY}) TO '{out}' (FORMAT parquet, PARTITION_BY (l_returnflag))")
    files = _files(out)
    assert "_SUCCESS" in files
    assert {f.split("/")[0] for f in files if f != "_SUCCESS"} == {"l_returnflag=A", "l_returnflag=N", "l_returnflag=R"}
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # staging renamed into place
    cols = "l_orderkey, l_linenumber, l_quantity, l_extendedprice, l_shipdate, l_comment, l_returnflag"
    back = con.sql(f"SELECT {cols} FROM '{out}' ORDER BY l_orderkey, l_linenumber").arrow()
    expected = oracle.sql(f"SELECT {cols} FROM ({QUERY}) ORDER BY l_orderkey, l_linenumber").to_arrow_table()
    assert back.num_rows == expected.num_rows
    assert back.drop_columns(["l_returnflag"]).equals(expected.drop_columns(["l_returnflag"]))
    assert back.column("l_returnflag").to_pylist() == expected.column("l_returnflag").to_pylist()


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_csv_and_json_read_back_by_duckdb(con, oracle, tmp_path, fmt):
    q = "SELECT n_nationkey, n_name, n_regionkey FROM nation"
    out = tmp_path / f"nation.{fmt}"
    con.sql(f"COPY ({q}) TO '{out}'" + (" (HEADER, DELIMITER '|')" if fmt == "csv" else ""))
    reader = f"read_csv('{out}', delim='|', header=true)" if fmt == "csv" else f"read_json('{out}')"
    back = duckdb.sql(f"SELECT * FROM {reader} ORDER BY 1").fetchall()
    assert back == oracle.sql(q + " ORDER BY 1").fetchall()


def test_create_table_on_a_path_and_a_registered_frame(con, tmp_path):
    con.register("frame", pa.table({"k": [3, 1, 2], "v": ["c", "a", "b"]}))
    out = tmp_path / "dir" / "frame.parquet"
    assert con.sql(f"CREATE TABLE '{out}' AS SELECT * FROM frame ORDER BY k").arrow().column(0).to_pylist() == [3]
    assert duckdb.sql(f"SELECT * FROM '{out}'").fetchall() == [(1, "a"), (2, "b"), (3, "c")]


def test_non_empty_directory_needs_overwrite_and_overwrite_replaces(con, tmp_path):
    out = tmp_path / "t"
    con.sql(f"COPY (SELECT 1 AS k, 'x' AS v) TO '{out}' (FORMAT parquet, PARTITION_BY (k))")
    before = _files(out)
    with pytest.raises(PuffinError, match="not empty; add OVERWRITE"):
        con.sql(f"COPY (SELECT 2 AS k, 'y' AS v) TO '{out}' (FORMAT parquet, PARTITION_BY (k))")
    assert _files(out) == before
    con.sql(f"COPY (SELECT 2 AS k, 'y' AS v) TO '{out}' (FORMAT parquet, PARTITION_BY (k), OVERWRITE)")
    assert [f.split("/")[0] for f in _files(out) if f != "_SUCCESS"] == ["k=2"]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def test_a_task_failing_midway_leaves_nothing(con, tmp_path):
    out = tmp_path / "never"
    bad = ("SELECT l_orderkey, CASE WHEN l_orderkey = (SELECT max(l_orderkey) FROM lineitem) "
           "THEN error('boom') ELSE l_comment END AS c FROM lineitem")
    with pytest.raises(ExecutionError, match="boom"):
        con.sql(f"COPY ({bad}) TO '{out}' (FORMAT parquet, PARTITION_BY (l_orderkey))")
    assert not out.exists()
    assert os.listdir(tmp_path) == []  # the staging directory is gone too


def test_readers_skip_a_staging_directory(con, tmp_path):
    out = tmp_path / "d"
    con.sql(f"COPY (SELECT range AS k FROM range(5)) TO '{out}/' (FORMAT parquet)")
    os.makedirs(out / "_puffin_staging-dead" / "k=1")  # what a killed writer leaves behind
    pq.write_table(pa.table({"k": [99]}), out / "_puffin_staging-dead" / "k=1" / "part.parquet")
    assert con.sql(f"SELECT count(*), max(k) FROM '{out}'").fetchall() == [(5, 4)]


def test_bad_copies_are_named(con, tmp_path):
    with pytest.raises(NotSupportedError, match="COPY option BOGUS"):
        con.sql(f"COPY (SELECT 1) TO '{tmp_path}/x.parquet' (BOGUS 1)")
    with pytest.raises(NotSupportedError, match="COPY ... FROM"):
        con.sql(f"COPY nation FROM '{tmp_path}/x.parquet'")
    with pytest.raises(PuffinError, match="cannot tell the file format"):
        con.sql(f"COPY (SELECT 1) TO '{tmp_path}/x.weird'")
    with pytest.raises(NotSupportedError, match="EXPLAIN ANALYZE of a write"):
        con.sql(f"EXPLAIN ANALYZE COPY (SELECT 1) TO '{tmp_path}/x.parquet'")
    assert os.listdir(tmp_path) == []


def test_explain_shows_the_write(con, tmp_path):
    text = con.sql(f"EXPLAIN COPY ({QUERY}) TO '{tmp_path}/o' (FORMAT parquet, PARTITION_BY (l_returnflag))").render()
    assert "write: parquet files to" in text and "partitioned by l_returnflag" in text
    assert os.listdir(tmp_path) == []


def test_empty_results_and_a_csv_source(con, oracle, tmp_path):
    empty = tmp_path / "empty.parquet"
    assert con.sql(f"COPY ({QUERY} AND false) TO '{empty}'").fetchall()[0][:2] == (0, 1)
    assert duckdb.sql(f"SELECT count(*) FROM '{empty}'").fetchall() == [(0,)]
    parts = tmp_path / "none"
    con.sql(f"COPY ({QUERY} AND false) TO '{parts}' (FORMAT parquet, PARTITION_BY (l_returnflag))")
    assert _files(parts) == ["_SUCCESS"]
    # a CSV source written back as Parquet in several files
    csv = tmp_path / "orders.csv"
    oracle.sql(f"COPY (SELECT * FROM orders) TO '{csv}' (HEADER)")
    out = tmp_path / "from_csv"
    con.sql(f"COPY (SELECT * FROM '{csv}' WHERE o_totalprice > 1000) TO '{out}/' (FORMAT parquet)")
    got = con.sql(f"SELECT * FROM '{out}' ORDER BY o_orderkey").arrow()
    want = oracle.sql(f"SELECT * FROM read_csv('{csv}') WHERE o_totalprice > 1000 ORDER BY o_orderkey")
    assert_same_result(got, want.to_arrow_table(), ordered=True)


def test_a_driver_killed_before_publishing_leaves_nothing_visible(tmp_path, tpch_dir):
    import subprocess
    import sys
    import textwrap

    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import os, signal, puffin
        from puffin.writes import files
        def die(self, written):  # every task wrote its files; the driver dies before publishing
            assert written.num_rows > 0
            os.kill(os.getpid(), signal.SIGKILL)
        files.FileTarget.publish = die
        con = puffin.connect(target_partitions=2)
        con.register("lineitem", {str(tpch_dir) + '/lineitem'!r})
        con.sql("COPY (SELECT * FROM lineitem) TO '{out}' (FORMAT parquet, PARTITION_BY (l_returnflag))")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240, check=False,
                          env={**os.environ, "PUFFIN_PRESTART": "0"})
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not out.exists()
    staged = [p for p in os.listdir(tmp_path) if p.startswith(".out.puffin-staging-")]
    assert len(staged) == 1 and _files(tmp_path / staged[0])  # the tasks' files, hidden
    con = puffin.connect()
    with pytest.raises(PuffinError, match="no files found"):  # a reader of the parent sees none of them
        con.sql(f"SELECT count(*) FROM '{tmp_path}'")
    # the next write to the target removes what the dead writer left (its pid is gone)
    con.register("lineitem", f"{tpch_dir}/lineitem")
    con.sql(f"COPY (SELECT l_orderkey, l_linenumber FROM lineitem LIMIT 10) TO '{out}' "
            "(FORMAT parquet, PARTITION_BY (l_linenumber))")
    assert os.listdir(tmp_path) == ["out"] and "_puffin_owner" not in str(_files(out))


def test_abandoned_staging_is_removed_and_a_live_writers_kept(tmp_path, local_ray):
    """Staging beside a target: removed when its owner ran here and is gone, or when another
    host's (or an ownerless one) was untouched for a day; kept when its writer lives, or when
    another host's changed lately."""
    import json
    import socket
    import time

    from puffin.writes import files

    def staging(name: str, owner: dict | None, age_s: float = 0) -> str:
        d = tmp_path / f".out.puffin-staging-{name}"
        d.mkdir()
        pq.write_table(pa.table({"x": [1]}), d / "part-0.parquet")
        if owner is not None:
            (d / files.OWNER).write_text(json.dumps(owner))
        then = time.time() - age_s
        for f in d.iterdir():
            os.utime(f, (then, then))
        return d.name

    here = socket.gethostname()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    kept = {
        staging("live", {"host": here, "pid": os.getpid(), "started": files._start_time(os.getpid())}),
        staging("elsewhere-recent", {"host": "other-node", "pid": 1, "started": None}, age_s=3600),
        staging("no-owner-recent", None, age_s=60),
    }
    staging("dead", {"host": here, "pid": int(dead), "started": "1"}, age_s=0)
    staging("reused-pid", {"host": here, "pid": os.getpid(), "started": "0"}, age_s=0)  # same pid, other start
    staging("elsewhere-old", {"host": "other-node", "pid": 1, "started": None}, age_s=2 * 86400)
    staging("no-owner-old", None, age_s=2 * 86400)
    con = puffin.connect()
    con.sql(f"COPY (SELECT 1 AS x, 2 AS y) TO '{tmp_path}/out' (FORMAT parquet, PARTITION_BY (x))")
    assert set(os.listdir(tmp_path)) == kept | {"out"}


def test_create_table_as_without_a_catalog_makes_a_session_table(local_ray, tpch_dir, oracle):
    con = puffin.connect()
    con.register("nation", f"{tpch_dir}/nation")
    q = "SELECT n_regionkey, count(*) AS n FROM nation GROUP BY 1"
    assert con.sql(f"CREATE TABLE per_region AS {q}").fetchall() == [(5,)]
    assert con.sql("SELECT * FROM per_region ORDER BY 1").fetchall() == oracle.sql(q + " ORDER BY 1").fetchall()
    with pytest.raises(PuffinError, match="per_region already exists"):
        con.sql(f"CREATE TABLE per_region AS {q}")
    assert con.sql(f"CREATE TABLE IF NOT EXISTS per_region AS {q}").fetchall() == [(0,)]
    with pytest.raises(NotSupportedError, match="INSERT of registered table per_region: .* read-only"):
        con.sql("INSERT INTO per_region VALUES (9, 9)")
    with pytest.raises(puffin.errors.BindError, match="unknown table nowhere: name an Iceberg table"):
        con.sql("INSERT INTO nowhere VALUES (1)")
