"""INSERT INTO and CREATE TABLE AS on Iceberg tables (the fast path: data files from the tasks, one
pyiceberg commit). The table afterwards is read back with Puffin and with pyiceberg and compared
with DuckDB's answer for the same query; failures, killed tasks, a killed driver and concurrent
writers leave it consistent."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import pyarrow as pa
import pytest

import puffin
from puffin.demo import TABLES
from puffin.errors import BindError, ExecutionError, PuffinError
from puffin.testing import assert_same_result

pytest.importorskip("pyiceberg")
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import DateType, DecimalType, LongType, NestedField, StringType

Q = ("SELECT l_orderkey, l_linenumber, l_returnflag, l_quantity, l_extendedprice, l_shipdate "
     "FROM lineitem WHERE l_linenumber <= 3")


def _lake(tmp):
    props = {"type": "sql", "uri": f"sqlite:///{tmp}/catalog.db", "warehouse": f"file://{tmp}/wh"}
    cat = SqlCatalog("lake", **{k: v for k, v in props.items() if k != "type"})
    cat.create_namespace("db")
    return cat, props


def _connect(props, tpch_dir, **kw):
    con = puffin.connect(catalogs={"lake": props}, **kw)
    for t in TABLES:
        con.register(t, f"{tpch_dir}/{t}")
    return con


def _data_files(tmp):
    return sorted(os.path.join(d, f) for d, _, names in os.walk(tmp / "wh") for f in names if f.endswith(".parquet"))


@pytest.fixture(params=[None, 3], ids=lambda p: f"p{p}")
def lake(request, backend, tmp_path, tpch_dir):
    cat, props = _lake(tmp_path)
    return cat, _connect(props, tpch_dir, target_partitions=request.param), tmp_path


def test_ctas_then_inserts_read_back_as_duckdb(lake, oracle):
    cat, con, _ = lake
    first = con.sql(f"CREATE TABLE lake.db.li AS {Q}").arrow()
    expected = oracle.sql(Q).to_arrow_table()
    table = cat.load_table("db.li")
    assert first.column("rows_written").to_pylist() == [expected.num_rows]
    assert first.column("snapshot_id").to_pylist() == [table.metadata.current_snapshot_id]
    assert_same_result(con.sql("SELECT * FROM lake.db.li").arrow(), expected, ordered=False)
    assert_same_result(table.scan().to_arrow(), expected, ordered=False, check_types=False)

    more = "SELECT l_orderkey, l_linenumber, l_returnflag, l_quantity, l_extendedprice, l_shipdate " \
           "FROM lineitem WHERE l_linenumber = 4"
    second = con.sql(f"INSERT INTO lake.db.li {more}").arrow()
    assert second.column("rows_written").to_pylist() == [oracle.sql(more).to_arrow_table().num_rows]
    both = oracle.sql(f"{Q} UNION ALL {more}").to_arrow_table()
    assert_same_result(con.sql("SELECT * FROM lake.db.li").arrow(), both, ordered=False)
    assert_same_result(cat.load_table("db.li").scan().to_arrow(), both, ordered=False, check_types=False)
    assert len(cat.load_table("db.li").metadata.snapshots) == 2
    # time travel sees the first commit only
    sid = first.column("snapshot_id")[0].as_py()
    assert con.sql(f"SELECT count(*) FROM lake.db.li FOR VERSION AS OF {sid}").fetchall() == [(expected.num_rows,)]


def test_insert_into_a_partitioned_table_with_column_list_and_casts(lake):
    cat, con, _ = lake
    schema = Schema(NestedField(1, "flag", StringType(), required=False),
                    NestedField(2, "k", LongType(), required=True),
                    NestedField(3, "price", DecimalType(15, 2), required=False),
                    NestedField(4, "day", DateType(), required=False))
    spec = PartitionSpec(PartitionField(source_id=1, field_id=1000, transform=IdentityTransform(), name="flag"))
    cat.create_table("db.parts", schema=schema, partition_spec=spec)
    # int32 keys widen to bigint, the column list reorders, `day` stays NULL
    con.sql("INSERT INTO lake.db.parts (k, flag, price) "
            "SELECT l_linenumber, l_returnflag, l_extendedprice FROM lineitem WHERE l_orderkey < 100")
    table = cat.load_table("db.parts")
    files = list(table.scan().plan_files())
    assert {f.file.partition[0] for f in files} == {"A", "N", "R"}
    assert all(len({f.file.partition[0]}) == 1 for f in files)
    got = con.sql("SELECT flag, sum(k), sum(price), count(day) FROM lake.db.parts GROUP BY flag ORDER BY flag")
    want = con.sql("SELECT l_returnflag, sum(l_linenumber), sum(l_extendedprice), 0 FROM lineitem "
                   "WHERE l_orderkey < 100 GROUP BY 1 ORDER BY 1")
    assert got.fetchall() == want.fetchall()


def test_bad_inserts_change_nothing(lake):
    cat, con, tmp = lake
    con.sql("CREATE TABLE lake.db.t AS SELECT 1::BIGINT AS id, 'a' AS v")
    before = cat.load_table("db.t").metadata.current_snapshot_id
    files = _data_files(tmp)
    cases = [
        ("INSERT INTO lake.db.t SELECT 1", PuffinError, "gives 1 columns, 2 are expected"),
        ("INSERT INTO lake.db.t SELECT 'x', 'y'", PuffinError, "column id is int64; the query gives string"),
        ("INSERT INTO lake.db.t (id, nope) SELECT 1, 'y'", BindError, "no column nope; columns: id, v"),
        ("INSERT INTO lake.db.missing SELECT 1, 'y'", BindError, "lake.db.missing' does not exist.*Tables in lake.db: t"),
        ("CREATE TABLE lake.db.t AS SELECT 2 AS id", PuffinError, "already exists"),
        ("CREATE TABLE lake.nowhere.t AS SELECT 2 AS id", BindError, "namespace lake.nowhere does not exist"),
        ("INSERT INTO lake.db.t SELECT 1e300, 'big'", ExecutionError, "column id: cannot store the value"),
        ("INSERT INTO lake.db.t SELECT l_orderkey, CASE WHEN l_orderkey = 1 THEN error('boom') END FROM lineitem",
         ExecutionError, "boom"),
    ]
    for sql, kind, message in cases:
        with pytest.raises(kind, match=message):
            con.sql(sql)
        assert cat.load_table("db.t").metadata.current_snapshot_id == before, sql
        assert _data_files(tmp) == files, f"{sql} left data files"
    assert con.sql("SELECT * FROM lake.db.t").fetchall() == [(1, "a")]
    assert con.sql("CREATE TABLE IF NOT EXISTS lake.db.t AS SELECT 2 AS id, 'b' AS v").fetchall() == [(0, None)]


def test_create_table_with_columns_then_insert_values(lake):
    cat, con, _ = lake
    con.sql("CREATE TABLE lake.db.kv (k BIGINT NOT NULL, v VARCHAR, d DECIMAL(10, 2))")
    assert [f.required for f in cat.load_table("db.kv").schema().fields] == [True, False, False]
    con.sql("INSERT INTO lake.db.kv VALUES (1, 'one', 1.5), (2, NULL, 2.25)")
    with pytest.raises(PuffinError, match="column k is NOT NULL and gets no value"):
        con.sql("INSERT INTO lake.db.kv (v) VALUES ('x')")
    with pytest.raises(ExecutionError, match="column k is NOT NULL but 1 rows have NULL"):
        con.sql("INSERT INTO lake.db.kv VALUES (NULL::BIGINT, 'x', 1)")
    assert con.sql("SELECT * FROM lake.db.kv ORDER BY k").fetchall() == [
        (1, "one", __import__("decimal").Decimal("1.50")), (2, None, __import__("decimal").Decimal("2.25"))]


def test_concurrent_appenders_both_commit(local_ray, tmp_path, tpch_dir):
    cat, props = _lake(tmp_path)
    con = _connect(props, tpch_dir)
    con.sql("CREATE TABLE lake.db.c (writer BIGINT, n BIGINT)")
    errors = []

    def append(w):
        try:
            c = _connect(props, tpch_dir)
            for i in range(3):
                c.sql(f"INSERT INTO lake.db.c SELECT {w}, {i}")
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=append, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert con.sql("SELECT writer, count(*) FROM lake.db.c GROUP BY 1 ORDER BY 1").fetchall() == [
        (w, 3) for w in range(4)]
    assert len(cat.load_table("db.c").metadata.snapshots) == 12


def test_a_conflicting_commit_is_retried_on_top_of_the_other(local_ray, tmp_path, tpch_dir, monkeypatch):
    """Another writer commits between this write's planning and its commit: the commit fails
    on the catalog's check, the table is refreshed and the same files go on top."""
    from puffin.writes import tables

    cat, props = _lake(tmp_path)
    con = _connect(props, tpch_dir)
    con.sql("CREATE TABLE lake.db.r AS SELECT 0::BIGINT AS x")
    other = _connect(props, tpch_dir)
    original = tables.TableTarget.commit
    fired = []

    def commit(self, written):
        if not fired:
            fired.append(self)
            other.sql("INSERT INTO lake.db.r SELECT 2")  # gets in first
        return original(self, written)

    monkeypatch.setattr(tables.TableTarget, "commit", commit)
    mine = con.sql("INSERT INTO lake.db.r SELECT 1").arrow()
    snaps = cat.load_table("db.r").metadata.snapshots
    assert len(snaps) == 3 and snaps[-1].snapshot_id == mine.column("snapshot_id")[0].as_py()
    assert snaps[-1].parent_snapshot_id == snaps[-2].snapshot_id  # on top of the other's
    assert sorted(r[0] for r in con.sql("SELECT x FROM lake.db.r").fetchall()) == [0, 1, 2]


def test_a_writer_task_killed_midway_is_retried_and_its_files_never_count(ray_with_fault, tmp_path, tpch_dir,
                                                                          oracle):
    (tmp_path / "l").mkdir()
    _, props = _lake(tmp_path / "l")
    con = _connect(props, tpch_dir, target_partitions=3)
    assert "Stage 1" in con.sql(f"EXPLAIN CREATE TABLE lake.db.k AS {Q} ORDER BY l_orderkey").render()
    con.sql(f"CREATE TABLE lake.db.k AS {Q} ORDER BY l_orderkey")
    assert os.path.exists(ray_with_fault), "the fault was never injected"
    assert_same_result(con.sql("SELECT * FROM lake.db.k").arrow(), oracle.sql(Q).to_arrow_table(), ordered=False)


def test_a_driver_killed_before_its_commit_leaves_the_table_as_it_was(tmp_path, tpch_dir):
    cat, props = _lake(tmp_path)
    con = _connect(props, tpch_dir)
    con.sql("CREATE TABLE lake.db.d AS SELECT 1::BIGINT AS x")
    before = cat.load_table("db.d").metadata.current_snapshot_id
    script = textwrap.dedent(f"""
        import os, signal, puffin
        from puffin.writes import tables
        def die(self, written):  # the tasks wrote their files; the driver dies before committing
            assert written.num_rows > 0
            os.kill(os.getpid(), signal.SIGKILL)
        tables.TableTarget.commit = die
        con = puffin.connect(catalogs={{"lake": {props!r}}}, target_partitions=2)
        con.sql("INSERT INTO lake.db.d SELECT range FROM range(100000)")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240, check=False,
                          env={**os.environ, "PUFFIN_PRESTART": "0"})
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert len(_data_files(tmp_path)) > 1  # its files exist, unreferenced
    assert cat.load_table("db.d").metadata.current_snapshot_id == before
    assert con.sql("SELECT count(*) FROM lake.db.d").fetchall() == [(1,)]
    con.sql("INSERT INTO lake.db.d SELECT 2")  # nothing is locked
    assert con.sql("SELECT sum(x) FROM lake.db.d").fetchall() == [(3,)]


def test_appends_to_a_table_on_the_s3_server(local_ray, tmp_path, tpch_dir, oracle, s3_server, s3_bucket):
    props = {"type": "sql", "uri": f"sqlite:///{tmp_path}/c.db", "warehouse": f"s3://{s3_bucket}/appends",
             "s3.endpoint": s3_server.endpoint, "s3.access-key-id": s3_server.access_key,
             "s3.secret-access-key": s3_server.secret_key, "s3.region": s3_server.region}
    cat = SqlCatalog("lake", **{k: v for k, v in props.items() if k != "type"})
    cat.create_namespace("db")
    con = _connect(props, tpch_dir, target_partitions=2)
    con.sql(f"CREATE TABLE lake.db.s AS {Q}")
    con.sql(f"INSERT INTO lake.db.s {Q}")
    expected = oracle.sql(f"{Q} UNION ALL {Q}").to_arrow_table()
    assert_same_result(con.sql("SELECT * FROM lake.db.s").arrow(), expected, ordered=False)
    assert all(t.file.file_path.startswith("s3://") for t in cat.load_table("db.s").scan().plan_files())
    assert_same_result(cat.load_table("db.s").scan().to_arrow(), expected, ordered=False, check_types=False)


def test_in_memory_source_to_iceberg(local_ray, tmp_path, tpch_dir):
    cat, props = _lake(tmp_path)
    con = _connect(props, tpch_dir)
    frame = pa.table({"id": pa.array(range(1000), pa.int64()), "name": [f"n{i}" for i in range(1000)]})
    con.register("frame", frame)
    con.sql("CREATE TABLE lake.db.f AS SELECT * FROM frame")
    assert cat.load_table("db.f").scan().to_arrow().sort_by("id").cast(frame.schema).equals(frame)


def test_an_unknown_commit_state_keeps_the_data_files(local_ray, tmp_path, tpch_dir, monkeypatch):
    """The catalog may have taken the commit: deleting the files could break a committed snapshot."""
    from pyiceberg.exceptions import CommitStateUnknownException

    cat, props = _lake(tmp_path)
    con = _connect(props, tpch_dir)
    con.sql("CREATE TABLE lake.db.u AS SELECT 1::BIGINT AS x")
    before, files = cat.load_table("db.u").metadata.current_snapshot_id, _data_files(tmp_path)

    def lost(self, *args, **kwargs):
        raise CommitStateUnknownException("the connection to the catalog dropped")

    monkeypatch.setattr(SqlCatalog, "commit_table", lost)
    with pytest.raises(PuffinError, match="may or may not have happened.*data files were kept"):
        con.sql("INSERT INTO lake.db.u SELECT range FROM range(10)")
    monkeypatch.undo()
    assert len(_data_files(tmp_path)) == len(files) + 1  # this write's file is still there
    assert cat.load_table("db.u").metadata.current_snapshot_id == before
