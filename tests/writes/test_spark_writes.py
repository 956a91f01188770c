"""MERGE, UPDATE, DELETE, INSERT OVERWRITE and CREATE OR REPLACE through ``Connection.sql`` on local
Spark, and reads delegated to Spark: Spark reads Puffin's appends, Puffin reads Spark's merges
(merge-on-read delete files included), bad statements change nothing."""

from __future__ import annotations

import threading

import pyarrow as pa
import pytest

import puffin
from puffin.errors import ExecutionError, NotSupportedError
from tests.spark.conftest import skip_without_spark

SPARK = {"mode": "local", "master": "local[2]", "driver_memory": "768m",
         "conf": {"spark.sql.shuffle.partitions": "2"}}


@pytest.fixture(scope="module")
def lake(tmp_path_factory, local_ray):
    skip_without_spark()
    from pyiceberg.catalog.sql import SqlCatalog

    d = tmp_path_factory.mktemp("spark-writes")
    props = {"type": "sql", "uri": f"sqlite:///{d}/catalog.db", "warehouse": f"file://{d}/wh"}
    cat = SqlCatalog("lake", uri=props["uri"], warehouse=props["warehouse"])
    cat.create_namespace("db")
    con = puffin.connect(catalogs={"lake": props}, spark=SPARK)
    yield cat, con, props
    con.close()


def _rows(con, table):
    return con.sql(f"SELECT * FROM {table} ORDER BY id").fetchall()


def test_merge_update_delete_on_a_table_puffin_created(lake):
    cat, con, _ = lake
    con.sql("CREATE TABLE lake.db.acc AS SELECT range AS id, 'v' || range AS v FROM range(6)")
    con.register("updates", pa.table({"id": [1, 2, 9], "v": ["one", "two", "nine"]}))
    res = con.sql("MERGE INTO lake.db.acc t USING updates u ON t.id = u.id "
                  "WHEN MATCHED THEN UPDATE SET v = u.v WHEN NOT MATCHED THEN INSERT (id, v) VALUES (u.id, u.v)").arrow()
    table = cat.load_table("db.acc")
    assert res.column("snapshot_id").to_pylist() == [table.metadata.current_snapshot_id]
    assert table.current_snapshot().summary.operation.value == "overwrite"
    updated = con.sql("UPDATE lake.db.acc SET v = upper(v) WHERE id >= 4").arrow()
    assert updated.column("rows_written").to_pylist() == [3]
    deleted = con.sql("DELETE FROM lake.db.acc WHERE id = 0").arrow()
    assert deleted.column("rows_written").to_pylist() == [1]
    want = [(1, "one"), (2, "two"), (3, "v3"), (4, "V4"), (5, "V5"), (9, "NINE")]
    assert _rows(con, "lake.db.acc") == want
    assert sorted(cat.load_table("db.acc").scan().to_arrow().to_pylist(), key=lambda r: r["id"]) == [
        {"id": i, "v": v} for i, v in want]


MERGE_ALL_CLAUSES = (
    "MERGE INTO {t} t USING {s} s ON t.id = s.id "
    "WHEN MATCHED AND s.v = 'c' THEN DELETE "
    "WHEN MATCHED AND t.id < 2 THEN UPDATE SET v = s.v "  # id 2 matches, no clause applies: unchanged
    "WHEN NOT MATCHED BY SOURCE AND t.id > 4 THEN DELETE "
    "WHEN NOT MATCHED AND s.id < 10 THEN INSERT (id, v) VALUES (s.id, s.v)")


@pytest.mark.parametrize("mode", ["copy-on-write", "merge-on-read"])
def test_merge_and_update_from_count_the_rows_they_change_like_duckdb(lake, mode):
    """rows_written of a MERGE (every clause kind, conditions that leave rows alone) and of an
    UPDATE ... FROM is the rows changed, as DuckDB counts them on the same data, on both write
    modes: Iceberg's summary alone cannot say (copy-on-write counts whole rewritten files)."""
    import duckdb

    _, con, _ = lake
    name = f"lake.db.counts_{mode.replace('-', '_')}"
    con.sql(f"CREATE TABLE {name} (id BIGINT, v STRING) USING iceberg TBLPROPERTIES ('format-version'='2', "
            f"'write.delete.mode'='{mode}', 'write.update.mode'='{mode}', 'write.merge.mode'='{mode}')",
            dialect="spark")
    con.sql(f"INSERT INTO {name} SELECT range, range::VARCHAR FROM range(8)")
    source = pa.table({"id": pa.array([1, 2, 3, 9, 10], pa.int64()), "v": ["a", "b", "c", "z", "y"]})
    con.register("src", source)
    oracle = duckdb.connect()
    oracle.sql("CREATE TABLE t AS SELECT range AS id, range::VARCHAR AS v FROM range(8)")
    oracle.register("src", source)
    want = oracle.sql(MERGE_ALL_CLAUSES.format(t="t", s="src")).fetchall()[0][0]
    got = con.sql(MERGE_ALL_CLAUSES.format(t=name, s="src")).arrow()
    assert got.column("rows_written").to_pylist() == [want] == [6]
    assert _rows(con, name) == oracle.sql("SELECT * FROM t ORDER BY id").fetchall()
    update = "UPDATE {t} AS x SET v = upper(s.v) FROM src s WHERE x.id = s.id AND s.id > 1"
    want = oracle.sql(update.format(t="t")).fetchall()[0][0]
    got = con.sql(update.format(t=name)).arrow()
    assert got.column("rows_written").to_pylist() == [want] == [2]
    assert _rows(con, name) == oracle.sql("SELECT * FROM t ORDER BY id").fetchall()


def test_puffin_reads_spark_merge_on_read_deletes_and_spark_reads_puffin_appends(lake):
    cat, con, _ = lake
    con.sql("CREATE TABLE lake.db.mor (id BIGINT, v STRING) USING iceberg TBLPROPERTIES ("
            "'format-version'='2', 'write.delete.mode'='merge-on-read', "
            "'write.update.mode'='merge-on-read', 'write.merge.mode'='merge-on-read')", dialect="spark")
    con.sql("INSERT INTO lake.db.mor SELECT range, 'p' || range FROM range(100)")  # Puffin's append
    assert con.sql("SELECT count(*) AS n, sum(id) AS s FROM lake.db.mor", engine="spark").fetchall() == [(100, 4950)]
    con.register("changes", pa.table({"id": [5, 7, 200], "v": ["five", "seven", "new"]}))
    con.sql("MERGE INTO lake.db.mor t USING changes c ON t.id = c.id WHEN MATCHED THEN UPDATE SET v = c.v "
            "WHEN NOT MATCHED THEN INSERT (id, v) VALUES (c.id, c.v)")
    con.sql("DELETE FROM lake.db.mor WHERE id % 10 = 3")
    tasks = list(cat.load_table("db.mor").scan().plan_files())
    assert any(t.delete_files for t in tasks), "Spark wrote no delete file"
    got = con.sql("SELECT id, v FROM lake.db.mor WHERE id IN (3, 5, 7, 13, 200) ORDER BY id").fetchall()
    assert got == [(5, "five"), (7, "seven"), (200, "new")]
    assert con.sql("SELECT count(*) FROM lake.db.mor").fetchall() == [(91,)]
    spark_view = con.sql("SELECT id, v FROM lake.db.mor ORDER BY id", engine="spark").arrow()
    assert spark_view.equals(con.sql("SELECT id, v FROM lake.db.mor ORDER BY id").arrow().cast(spark_view.schema))


def test_overwrites(lake):
    cat, con, _ = lake
    con.sql("CREATE TABLE lake.db.ow AS SELECT range AS id FROM range(5)")
    con.sql("INSERT OVERWRITE lake.db.ow SELECT range + 100 FROM range(2)")
    assert _rows(con, "lake.db.ow") == [(100,), (101,)]
    con.sql("CREATE OR REPLACE TABLE lake.db.ow AS SELECT 7::BIGINT AS id, 'x' AS tag")
    assert con.sql("SELECT * FROM lake.db.ow").fetchall() == [(7, "x")]
    assert len(cat.load_table("db.ow").metadata.snapshots) >= 3  # replaced, history kept


def test_bad_spark_statements_change_nothing(lake):
    cat, con, _ = lake
    con.sql("CREATE TABLE lake.db.bad AS SELECT range AS id, 'a' AS v FROM range(3)")
    before = cat.load_table("db.bad").metadata.current_snapshot_id
    con.register("dups", pa.table({"id": [1, 1], "v": ["x", "y"]}))
    with pytest.raises(ExecutionError, match="(?i)multiple|more than one|cardinality"):
        con.sql("MERGE INTO lake.db.bad t USING dups d ON t.id = d.id WHEN MATCHED THEN UPDATE SET v = d.v")
    with pytest.raises(ExecutionError, match="(?i)cannot be found|not found|cannot resolve|unresolved"):
        con.sql("UPDATE lake.db.bad SET nope = 1")
    assert cat.load_table("db.bad").metadata.current_snapshot_id == before
    assert _rows(con, "lake.db.bad") == [(0, "a"), (1, "a"), (2, "a")]
    with pytest.raises(NotSupportedError, match="only Iceberg tables change"):
        con.sql("UPDATE 'file.parquet' SET v = 1")


def test_a_merge_racing_appends_either_commits_whole_or_fails_cleanly(lake):
    _, con, props = lake
    con.sql("CREATE TABLE lake.db.race AS SELECT range AS id, 0::BIGINT AS n FROM range(50)")
    appender = puffin.connect(catalogs={"lake": props})
    stop = threading.Event()
    appended = []

    def append():
        i = 1000
        while not stop.is_set():
            appender.sql(f"INSERT INTO lake.db.race SELECT {i}, 0")
            appended.append(i)
            i += 1

    t = threading.Thread(target=append)
    t.start()
    try:
        outcome = con.sql("MERGE INTO lake.db.race r USING (SELECT range AS id FROM range(50)) s ON r.id = s.id "
                          "WHEN MATCHED THEN UPDATE SET n = r.n + 1").arrow()
    except ExecutionError as e:  # Iceberg's validation refused a conflicting commit
        outcome = e
    finally:
        stop.set()
        t.join()
    ns = dict(con.sql("SELECT id, n FROM lake.db.race").fetchall())
    assert all(i in ns for i in appended) and len(ns) == 50 + len(appended)  # every append kept
    merged = {ns[i] for i in range(50)}
    assert merged == ({1} if isinstance(outcome, pa.Table) else {0}), outcome  # all or nothing


def test_call_runs_icebergs_maintenance_procedures(lake):
    """CALL cat.system.procedure(...) runs on Spark and returns its rows: remove_orphan_files
    removes what a killed writer left in the table's data directory (older than its 3 days) and
    nothing the table uses; expire_snapshots drops old snapshots. The table reads the same."""
    import datetime as dt
    import os
    import time

    import pyarrow.parquet as pq

    cat, con, _ = lake
    con.sql("CREATE TABLE lake.db.kept AS SELECT range AS id FROM range(10)")
    for i in range(3):
        con.sql(f"INSERT INTO lake.db.kept SELECT {100 + i}")
    table = cat.load_table("db.kept")
    data_dir = table.location().removeprefix("file://") + "/data"
    orphan = os.path.join(data_dir, "00000-0-killed-writer.parquet")
    pq.write_table(pa.table({"id": pa.array([999], pa.int64())}), orphan)
    old = time.time() - 5 * 86400
    os.utime(orphan, (old, old))
    before = _rows(con, "lake.db.kept")

    dry = con.sql("CALL lake.system.remove_orphan_files(table => 'db.kept', dry_run => true)").arrow()
    assert [p.removeprefix("file:") for p in dry.column("orphan_file_location").to_pylist()] == [orphan]
    assert os.path.exists(orphan)  # a dry run lists only
    removed = con.sql("CALL lake.system.remove_orphan_files(table => 'db.kept')").arrow()
    assert [p.removeprefix("file:") for p in removed.column("orphan_file_location").to_pylist()] == [orphan]
    assert not os.path.exists(orphan) and _rows(con, "lake.db.kept") == before

    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    expired = con.sql(f"CALL system.expire_snapshots(table => 'db.kept', older_than => TIMESTAMP '{now}', "
                      "retain_last => 1);").arrow()
    assert "deleted_manifest_lists_count" in expired.column_names
    assert expired.column("deleted_manifest_lists_count").to_pylist() == [3]
    assert len(cat.load_table("db.kept").metadata.snapshots) == 1 and _rows(con, "lake.db.kept") == before


def test_bad_calls_are_named(lake):
    _, con, _ = lake
    with pytest.raises(NotSupportedError, match="only Iceberg's procedures run"):
        con.sql("CALL lake.db.my_proc(1)")
    with pytest.raises(NotSupportedError, match=r"this CALL statement; write CALL catalog.system.procedure\("):
        con.sql("CALL lake.system.expire_snapshots")
    with pytest.raises(puffin.PuffinError, match="unknown catalog nope in CALL; configured: lake"):
        con.sql("CALL nope.system.expire_snapshots(table => 'db.t')")
    with pytest.raises(ExecutionError, match="CALL lake.system.no_such_procedure: Spark.s Iceberg has no procedure named no_such_procedure"):
        con.sql("CALL lake.system.no_such_procedure(table => 'db.t')")
    text = con.sql("EXPLAIN CALL lake.system.expire_snapshots(table => 'db.t')").arrow().column(0)[0].as_py()
    assert text == "Spark SQL (local): CALL lake.system.expire_snapshots(table => 'db.t')"


def test_spark_off_is_refused_with_the_setting_named(local_ray, tmp_path):
    con = puffin.connect(catalogs={"lake": {"type": "sql", "uri": f"sqlite:///{tmp_path}/c.db",
                                            "warehouse": f"file://{tmp_path}/wh"}}, spark={"mode": "off"})
    with pytest.raises(NotSupportedError, match='spark=\\{"mode": "local"\\}'):
        con.sql("DELETE FROM lake.db.t WHERE id = 1")
