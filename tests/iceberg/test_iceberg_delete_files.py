"""An Iceberg table with a real positional delete file, written by local Spark (merge-on-read).

pyiceberg cannot write delete files, so Spark 3.5 + Iceberg makes them through the JDBC catalog
on SQLite that pyiceberg (and so Puffin) reads. Spark here can only use a file:// warehouse:
the AWS SDK its S3FileIO needs is not installable on this machine (tests/iceberg/README.md).
"""

from __future__ import annotations

import pytest

import puffin
from tests.iceberg.spark_writer import run_spark_sql, spark_available

REASON = spark_available()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"local Spark + Iceberg missing: {REASON}")


@pytest.fixture(scope="module")
def spark_lake(tmp_path_factory):
    from pyiceberg.catalog.sql import SqlCatalog

    tmp = tmp_path_factory.mktemp("spark_lake")
    props = {"type": "sql", "uri": f"sqlite:///{tmp}/catalog.db", "warehouse": f"file://{tmp}/wh"}
    cat = SqlCatalog("lake", **props)
    cat.create_namespace("db")
    run_spark_sql(
        [
            ("CREATE TABLE lake.db.t (id bigint, ts timestamp_ntz, v string) USING iceberg "
            "PARTITIONED BY (days(ts)) TBLPROPERTIES ('format-version'='2', 'write.delete.mode'='merge-on-read')"),
            ("INSERT INTO lake.db.t VALUES (1, TIMESTAMP_NTZ'2024-01-01 10:00:00', 'a'), "
            "(2, TIMESTAMP_NTZ'2024-01-01 11:00:00', 'b'), (3, TIMESTAMP_NTZ'2024-01-01 12:00:00', 'c'), "
            "(4, TIMESTAMP_NTZ'2024-01-02 10:00:00', 'd'), (5, TIMESTAMP_NTZ'2024-01-02 11:00:00', 'e')"),
            "DELETE FROM lake.db.t WHERE id = 3",
        ],
        catalog_uri=props["uri"],
        warehouse=props["warehouse"],
    )
    return cat, props


def test_positional_deletes_are_applied_and_time_travel_sees_the_row(local_ray, spark_lake):
    cat, props = spark_lake
    tbl = cat.load_table("db.t")
    tasks = list(tbl.scan().plan_files())
    assert any(t.delete_files for t in tasks), "Spark did not write a delete file"
    before = tbl.metadata.snapshots[-2].snapshot_id
    con = puffin.connect(target_partitions=2, catalogs={"lake": props})
    assert con.sql("SELECT id FROM lake.db.t ORDER BY id").fetchall() == [(1,), (2,), (4,), (5,)]
    old = con.sql(f"SELECT id, v FROM lake.db.t FOR VERSION AS OF {before} ORDER BY id").fetchall()
    assert old == [(1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "e")]
    day = con.sql("SELECT count(*) AS n FROM lake.db.t WHERE ts < TIMESTAMP '2024-01-02 00:00:00'").fetchall()
    assert day == [(2,)]
    plan = con.sql("EXPLAIN SELECT count(*) FROM lake.db.t WHERE ts >= TIMESTAMP '2024-01-02 00:00:00'").render()
    assert "1 of 2 files, 1 pruned" in plan
