"""Iceberg tables in a SQLite-backed pyiceberg catalog whose warehouse is on the S3 server.

The table is partitioned by day, appended to several times, evolved (a column renamed, one
added), deleted from copy-on-write (pyiceberg) and with a positional delete file
(``delete_writer.py``, since pyiceberg cannot write delete files and Spark here cannot write
to S3). pyiceberg's own reader is the reference for what each snapshot
holds; DuckDB over that data is the oracle for the SQL.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import puffin
from puffin.testing import assert_same_result
from tests.iceberg.delete_writer import add_position_deletes

pyiceberg = pytest.importorskip("pyiceberg")
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import DayTransform
from pyiceberg.types import DoubleType, LongType, NestedField, StringType, TimestampType


def _batch(ids, day, label_name="v", note=False):
    cols = {
        "id": pa.array(ids, pa.int64()),
        "ts": pa.array([dt.datetime(2024, 1, day, 12) for _ in ids], pa.timestamp("us")),
        label_name: pa.array([f"k{i % 3}" for i in ids], pa.string()),
        "amount": pa.array([i * 1.5 for i in ids], pa.float64()),
    }
    if note:
        cols["note"] = pa.array([f"n{i}" for i in ids], pa.string())
    return pa.table(cols)


def _file_holding(tbl, row_id):
    for task in tbl.scan(row_filter=f"id = {row_id}").plan_files():
        return task.file.file_path
    raise AssertionError(f"no file holds id {row_id}")


def _position(tbl, row_id):
    path = _file_holding(tbl, row_id)
    with tbl.io.new_input(path).open() as f:
        return pq.read_table(f, columns=["id"]).column("id").to_pylist().index(row_id)


def _catalog(name, tmp, s3_server, s3_bucket):
    return SqlCatalog(name, **_props(tmp, name, s3_server, s3_bucket))


def _props(tmp, name, s3_server, s3_bucket):
    return {"type": "sql", "uri": f"sqlite:///{tmp}/{name}.db", "warehouse": f"s3://{s3_bucket}/{name}",
            "s3.endpoint": s3_server.endpoint, "s3.access-key-id": s3_server.access_key,
            "s3.secret-access-key": s3_server.secret_key, "s3.region": s3_server.region}


@pytest.fixture(scope="module")
def lake(tmp_path_factory, s3_server, s3_bucket):
    tmp = tmp_path_factory.mktemp("lake")
    cat = _catalog("lake", tmp, s3_server, s3_bucket)
    cat.create_namespace("db")
    schema = Schema(
        NestedField(1, "id", LongType(), required=False),
        NestedField(2, "ts", TimestampType(), required=False),
        NestedField(3, "v", StringType(), required=False),
        NestedField(4, "amount", DoubleType(), required=False),
    )
    spec = PartitionSpec(PartitionField(source_id=2, field_id=1000, transform=DayTransform(), name="ts_day"))
    tbl = cat.create_table("db.events", schema=schema, partition_spec=spec)
    snaps = {}
    tbl.append(_batch([1, 2, 3], 1))
    tbl.append(_batch([4, 5], 2))
    snaps["before_evolution"] = tbl.current_snapshot().snapshot_id
    tbl.append(_batch([6, 7, 8], 3))
    with tbl.update_schema() as up:
        up.rename_column("v", "label")
        up.add_column("note", StringType())
    tbl = cat.load_table("db.events")
    tbl.append(_batch([9, 10], 4, label_name="label", note=True))
    snaps["evolved"] = tbl.current_snapshot().snapshot_id
    tbl.delete("id = 5")  # pyiceberg deletes copy-on-write: rewritten data files
    snaps["deleted"] = tbl.current_snapshot().snapshot_id
    snaps["position_deleted"] = add_position_deletes(tbl, {_file_holding(tbl, 9): [_position(tbl, 9)]})
    other = _catalog("lake2", tmp, s3_server, s3_bucket)
    other.create_namespace("ref")
    labels = pa.table({"label": ["k0", "k1", "k2"], "title": ["zero", "one", "two"]})
    other.create_table("ref.labels", schema=labels.schema).append(labels)
    return {"tmp": tmp, "catalog": cat, "snaps": snaps,
            "config": {n: _props(tmp, n, s3_server, s3_bucket) for n in ("lake", "lake2")}}


@pytest.fixture(scope="module")
def con(local_ray, lake, s3_server):
    return puffin.connect(target_partitions=2, catalogs=lake["config"],
                          s3={"endpoint_url": s3_server.endpoint, "access_key_id": s3_server.access_key,
                              "secret_access_key": s3_server.secret_key})


def _reference(lake, snapshot_id=None) -> pa.Table:
    return lake["catalog"].load_table("db.events").scan(snapshot_id=snapshot_id).to_arrow()


def _check(con, sql, reference: pa.Table, ordered=False, duck_sql=None):
    d = duckdb.connect()
    d.register("events", reference)
    want = d.sql(duck_sql or sql.replace("lake.db.events", "events")).to_arrow_table()
    assert_same_result(con.sql(sql).arrow(), want, ordered=ordered, label=sql)


def test_current_snapshot_reads_evolved_schema_and_deletes(con, lake):
    ref = _reference(lake)
    assert ref.column_names == ["id", "ts", "label", "amount", "note"]
    assert 5 not in ref.column("id").to_pylist() and 9 not in ref.column("id").to_pylist()
    tasks = list(lake["catalog"].load_table("db.events").scan().plan_files())
    assert any(d.content.name == "POSITION_DELETES" for t in tasks for d in t.delete_files)
    assert con.sql("SELECT count(*) AS n FROM lake.db.events WHERE id IN (5, 9)").fetchall() == [(0,)]
    _check(con, "SELECT * FROM lake.db.events", ref)
    _check(con, "SELECT label, count(*) AS n, sum(amount) AS s, count(note) AS notes FROM lake.db.events "
                "GROUP BY label ORDER BY label", ref, ordered=True)


def test_time_travel_by_snapshot_id_and_timestamp(con, lake):
    sid = lake["snaps"]["before_evolution"]
    ref = _reference(lake, sid)
    assert ref.num_rows == 5
    for clause in (f"FOR VERSION AS OF {sid}", f"FOR SYSTEM_VERSION AS OF {sid}", f"AT (VERSION => {sid})"):
        got = con.sql(f"SELECT id, amount FROM lake.db.events {clause} ORDER BY id").fetchall()
        assert got == [(i, i * 1.5) for i in range(1, 6)], clause
    snap = lake["catalog"].load_table("db.events").metadata.snapshot_by_id(sid)
    when = dt.datetime.fromtimestamp(snap.timestamp_ms / 1000, dt.timezone.utc).isoformat()
    assert con.sql(f"SELECT count(*) AS n FROM lake.db.events FOR TIMESTAMP AS OF '{when}'").fetchall() == [(5,)]
    evolved = lake["snaps"]["evolved"]
    assert con.sql(f"SELECT count(*) AS n FROM lake.db.events FOR VERSION AS OF {evolved} WHERE id IN (5, 9)"
                   ).fetchall() == [(2,)]
    before_deletes = lake["snaps"]["deleted"]  # id 9 is still there, its delete file comes after
    assert con.sql(f"SELECT label, note FROM lake.db.events FOR VERSION AS OF {before_deletes} WHERE id = 9"
                   ).fetchall() == [("k0", "n9")]


def test_partition_filter_prunes_files(con):
    sql = ("SELECT count(*) AS n FROM lake.db.events "
           "WHERE ts >= TIMESTAMP '2024-01-03 00:00:00' AND ts < TIMESTAMP '2024-01-04 00:00:00'")
    assert con.sql(sql).fetchall() == [(3,)]
    text = con.sql("EXPLAIN ANALYZE " + sql).render()
    assert "snapshot " in text and "1 of " in text and "pruned" in text, text


def test_metadata_tables(con, lake):
    n = len(lake["catalog"].load_table("db.events").metadata.snapshots)
    assert con.sql('SELECT count(*) AS n FROM lake.db."events$snapshots"').fetchall() == [(n,)]
    ops = con.sql('SELECT operation FROM lake.db."events$snapshots" ORDER BY committed_at').fetchall()
    assert ops[0] == ("append",)


def test_join_across_catalogs_parquet_on_s3_and_a_local_csv(con, lake, s3_tpch, tmp_path):
    csv = tmp_path / "bonus.csv"
    csv.write_text("label,bonus\nk0,10\nk1,20\nk2,30\n")
    sql = (f"SELECT l.title, sum(e.amount) AS s, max(b.bonus) AS bonus, count(DISTINCT n.n_name) AS nations "
           f"FROM lake.db.events e JOIN lake2.ref.labels l ON e.label = l.label "
           f"JOIN '{csv}' b ON b.label = e.label "
           f"JOIN '{s3_tpch}/nation/*.parquet' n ON n.n_nationkey = e.id "
           f"GROUP BY l.title ORDER BY l.title")
    ref = _reference(lake)
    d = duckdb.connect()
    d.register("events", ref)
    d.register("labels", pa.table({"label": ["k0", "k1", "k2"], "title": ["zero", "one", "two"]}))
    d.register("nation", pa.table({"n_nationkey": list(range(25)), "n_name": [f"N{i}" for i in range(25)]}))
    want = d.sql(f"SELECT l.title, sum(e.amount) AS s, max(b.bonus) AS bonus, count(DISTINCT n.n_name) AS nations "
                 f"FROM events e JOIN labels l ON e.label = l.label JOIN '{csv}' b ON b.label = e.label "
                 f"JOIN nation n ON n.n_nationkey = e.id GROUP BY l.title ORDER BY l.title").to_arrow_table()
    assert_same_result(con.sql(sql).arrow(), want, ordered=True, label="cross-catalog join")


def test_clear_errors(con, lake):
    with pytest.raises(puffin.BindError, match="Iceberg table 'lake.db.nope' does not exist.*events"):
        con.sql("SELECT * FROM lake.db.nope")
    with pytest.raises(puffin.BindError, match="snapshot 42 of 'lake.db.events' does not exist"):
        con.sql("SELECT * FROM lake.db.events FOR VERSION AS OF 42")
    with pytest.raises(puffin.BindError, match="no snapshot at or before"):
        con.sql("SELECT * FROM lake.db.events FOR TIMESTAMP AS OF '2001-01-01 00:00:00'")
    with pytest.raises(puffin.BindError, match="cannot load Iceberg catalog 'nocat'.*lake, lake2"):
        con.sql("SELECT * FROM nocat.db.events")
    with pytest.raises(puffin.BindError, match="unknown metadata table"):
        con.sql('SELECT * FROM lake.db."events$nope"')
    with pytest.raises(puffin.NotSupportedError, match="only Iceberg tables have snapshots"):
        con.register("plain", pa.table({"x": [1]}))
        con.sql("SELECT * FROM plain FOR VERSION AS OF 1")
    assert con.sql("SELECT count(*) AS n FROM lake.db.events").fetchall() == [(8,)]


def test_default_catalog_and_namespace(local_ray, lake):
    con = puffin.connect(catalogs=lake["config"], default_catalog="lake", default_namespace="db")
    assert con.sql("SELECT count(*) AS n FROM db.events").fetchall() == [(8,)]
    assert con.sql("SELECT count(*) AS n FROM events").fetchall() == [(8,)]
    with pytest.raises(puffin.BindError, match="Iceberg table 'lake.db.nothing' does not exist"):
        con.sql("SELECT * FROM nothing")


def test_pyiceberg_configuration_is_honoured(lake):
    # a catalog Puffin is not given, configured the pyiceberg way (environment variables,
    # which pyiceberg reads when it is imported: hence a fresh process)
    env = dict(os.environ)
    for key, value in lake["config"]["lake"].items():
        env[f"PYICEBERG_CATALOG__LAKE__{key.upper().replace('.', '__').replace('-', '_')}"] = value
    code = ("import puffin; print(puffin.connect(num_cpus=1)"
            ".sql('SELECT count(*) AS n FROM lake.db.events').fetchall())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180,
                         check=False)
    assert out.stdout.strip().endswith("[(8,)]"), out.stderr[-2000:]
