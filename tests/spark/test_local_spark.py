"""LocalSpark against a real Spark 3.5 + Iceberg 1.10, state read back with pyiceberg.

Each write is checked exactly: the rows pyiceberg reads afterwards (merge-on-read position
deletes applied), the snapshot Spark reports (it must be the table's current one) and the
``rows`` the driver derives from the snapshot summary.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from decimal import Decimal
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from puffin.errors import ExecutionError, NotSupportedError, PuffinError, QueryCancelled
from puffin.spark.client import SparkInput, SparkJob, make_client
from puffin.spark.conf import catalog_conf, spark_conf
from puffin.spark.local import LOCAL_JAVA_OPTIONS
from puffin.spark.settings import SparkSettings
from puffin.storage import S3Config, Secret
from tests.spark.conftest import SETTINGS, skip_without_spark

ROOT = Path(__file__).resolve().parents[2]
MOR = ("TBLPROPERTIES ('format-version'='2', 'write.delete.mode'='merge-on-read', "
       "'write.update.mode'='merge-on-read', 'write.merge.mode'='merge-on-read')")


def ids_and_values(table: pa.Table) -> list[tuple]:
    return list(zip(table["id"].to_pylist(), table["v"].to_pylist(), strict=True))


def test_ctas_insert_and_overwrite(spark, lake):
    report = spark.run(SparkJob([
        ("CREATE TABLE lake.db.basic USING iceberg AS SELECT CAST(id AS BIGINT) id, CAST(id AS STRING) v "
        "FROM range(5)"),
        "INSERT INTO lake.db.basic VALUES (10, 'ten'), (11, 'eleven')",
    ]))
    ctas, insert = report.statements
    assert (ctas["table"], ctas["operation"], ctas["rows"], ctas["rows_exact"]) == ("lake.db.basic", "append", 5, True)
    assert (insert["operation"], insert["rows"]) == ("append", 2)
    assert insert["snapshot_id"] == lake.snapshot_id("basic")
    assert all(s["seconds"] >= 0 for s in report.statements) and report.seconds > 0
    assert ids_and_values(lake.read("basic")) == [(0, "0"), (1, "1"), (2, "2"), (3, "3"), (4, "4"),
                                                  (10, "ten"), (11, "eleven")]

    over = spark.run(SparkJob(["INSERT OVERWRITE lake.db.basic SELECT id * 100, v FROM lake.db.basic WHERE id < 2"]))
    (entry,) = over.statements
    assert (entry["operation"], entry["rows"], entry["rows_exact"]) == ("overwrite", 2, True)
    assert entry["summary"]["deleted-records"] == "7"
    assert ids_and_values(lake.read("basic")) == [(0, "0"), (100, "1")]
    assert entry["snapshot_id"] == lake.snapshot_id("basic")


def test_merge_on_read_update_delete_merge(spark, lake):
    spark.run(SparkJob([
        f"CREATE TABLE lake.db.mor (id BIGINT, v STRING) USING iceberg {MOR}",
        "INSERT INTO lake.db.mor SELECT id, CAST(id AS STRING) FROM range(10)",
    ]))
    report = spark.run(SparkJob([
        "UPDATE lake.db.mor SET v = 'u' WHERE id IN (1, 2, 3)",
        "DELETE FROM lake.db.mor WHERE id >= 8",
        ("MERGE INTO lake.db.mor t USING (SELECT 5 AS id, 'm' AS v UNION ALL SELECT 42, 'new') s ON t.id = s.id "
        "WHEN MATCHED THEN UPDATE SET v = s.v WHEN NOT MATCHED THEN INSERT *"),
        "MERGE INTO lake.db.mor t USING (SELECT 0 AS id) s ON t.id = s.id WHEN MATCHED THEN DELETE",
        "MERGE INTO lake.db.mor t USING (SELECT 77 AS id, 'x' AS v) s ON t.id = s.id WHEN NOT MATCHED THEN INSERT *",
    ]))
    update, delete, upsert, merge_delete, merge_insert = report.statements
    assert update["summary"]["added-position-deletes"] == "3"
    assert (update["rows"], update["rows_exact"]) == (3, True)
    assert (delete["rows"], delete["rows_exact"]) == (2, True)
    # an update (position delete + new row) mixed with an insert: the summary cannot split them
    # the data file of id 5 lost rows 8, 9 before: its delete file is rewritten with 3 positions
    assert upsert["summary"]["added-records"] == "2" and upsert["summary"]["added-position-deletes"] == "3"
    assert upsert["summary"]["removed-position-deletes"] == "2"
    assert (upsert["rows"], upsert["rows_exact"]) == (None, False)
    assert (merge_delete["rows"], merge_delete["rows_exact"]) == (1, True)
    assert (merge_insert["rows"], merge_insert["rows_exact"]) == (1, True)
    assert merge_insert["snapshot_id"] == lake.snapshot_id("mor")

    assert ids_and_values(lake.read("mor")) == [(1, "u"), (2, "u"), (3, "u"), (4, "4"), (5, "m"), (6, "6"),
                                                (7, "7"), (42, "new"), (77, "x")]
    tasks = lake.catalog.load_table("db.mor").scan().plan_files()
    assert any(task.delete_files for task in tasks), "merge-on-read writes left no delete file"


def test_copy_on_write_row_counts(spark, lake):
    report = spark.run(SparkJob([
        "CREATE TABLE lake.db.cow USING iceberg AS SELECT CAST(id AS BIGINT) id, 'x' v FROM range(6)",
        "DELETE FROM lake.db.cow WHERE id < 2",
        "UPDATE lake.db.cow SET v = 'y' WHERE id = 4",
        "DELETE FROM lake.db.cow WHERE id = 999",
    ]))
    _, delete, update, nothing = report.statements
    assert (delete["operation"], delete["rows"], delete["rows_exact"]) == ("overwrite", 2, True)
    # copy-on-write rewrites whole files: the summary counts rows rewritten, not rows changed
    assert (update["rows"], update["rows_exact"]) == (None, False)
    assert (nothing["rows"], nothing["rows_exact"]) == (0, True)
    assert ids_and_values(lake.read("cow")) == [(2, "x"), (3, "x"), (4, "y"), (5, "x")]


def test_pyiceberg_commits_while_spark_runs(spark, lake):
    """Spark holds no lock on the SQLite catalog between jobs, and sees commits made outside."""
    spark.run(SparkJob(["CREATE TABLE lake.db.turns (id BIGINT, v STRING) USING iceberg",
                        "INSERT INTO lake.db.turns VALUES (1, 'spark')"]))
    table = lake.catalog.load_table("db.turns")
    table.append(pa.table({"id": pa.array([2], pa.int64()), "v": ["pyiceberg"]}))  # "database is locked" before
    report = spark.run(SparkJob(["UPDATE lake.db.turns SET v = 'both' WHERE id = 2",
                                 "SELECT count(*) AS n FROM lake.db.turns"], want_result=True))
    assert report.result.to_pylist() == [{"n": 2}]
    assert ids_and_values(lake.read("turns")) == [(1, "spark"), (2, "both")]


def test_parquet_input_as_temp_view(spark, lake, tmp_path):
    pq.write_table(pa.table({"id": pa.array([1, 2, 3], pa.int64()), "v": ["a", "b", "c"]}), tmp_path / "src.parquet")
    spark.run(SparkJob([f"CREATE TABLE lake.db.fromfile (id BIGINT, v STRING) USING iceberg {MOR}",
                        "INSERT INTO lake.db.fromfile VALUES (1, 'old'), (9, 'keep')"]))
    report = spark.run(SparkJob(
        [("MERGE INTO lake.db.fromfile t USING src s ON t.id = s.id "
         "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"),
         "SELECT count(*) AS n FROM src"],
        inputs=[SparkInput("src", str(tmp_path / "src.parquet"))],
        want_result=True,
    ))
    assert report.result.to_pylist() == [{"n": 3}]
    assert ids_and_values(lake.read("fromfile")) == [(1, "a"), (2, "b"), (3, "c"), (9, "keep")]
    with pytest.raises(ExecutionError, match="TABLE_OR_VIEW_NOT_FOUND"):  # the view was the job's only
        spark.run(SparkJob(["SELECT * FROM src"]))


def test_result_types(spark):
    report = spark.run(SparkJob([
        ("SELECT 1 AS i, CAST(2 AS BIGINT) AS b, 1.5D AS d, CAST(3.25 AS DECIMAL(10, 2)) AS dec, 'x' AS s, "
        "DATE'2024-02-29' AS day, TIMESTAMP'2024-01-01 10:00:00' AS ts, "
        "TIMESTAMP_NTZ'2024-01-01 10:00:00' AS ntz, true AS ok, CAST(NULL AS STRING) AS nothing, 1 AS i "
        "UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'y', 2"),
    ], want_result=True))
    expected = pa.table(
        [pa.array([1, None], pa.int32()), pa.array([2, None], pa.int64()), pa.array([1.5, None], pa.float64()),
         pa.array([Decimal("3.25"), None], pa.decimal128(10, 2)), pa.array(["x", None], pa.string()),
         pa.array([dt.date(2024, 2, 29), None], pa.date32()),
         pa.array([dt.datetime(2024, 1, 1, 10, tzinfo=dt.timezone.utc), None], pa.timestamp("us", "UTC")),
         pa.array([dt.datetime(2024, 1, 1, 10), None], pa.timestamp("us")), pa.array([True, None], pa.bool_()),
         pa.array([None, "y"], pa.string()), pa.array([1, 2], pa.int32())],
        names=["i", "b", "d", "dec", "s", "day", "ts", "ntz", "ok", "nothing", "i"],
    )
    assert report.result.equals(expected, check_metadata=True), report.result
    empty = spark.run(SparkJob(["SELECT CAST(id AS INT) AS x FROM range(3) WHERE id < 0"], want_result=True))
    assert empty.result.schema == pa.schema([("x", pa.int32())]) and empty.result.num_rows == 0


def test_unknown_table_is_an_execution_error(spark):
    with pytest.raises(ExecutionError) as info:
        spark.run(SparkJob(["SELECT 1", "SELECT * FROM lake.db.no_such_table"]))
    message = str(info.value)
    assert message.startswith("[TABLE_OR_VIEW_NOT_FOUND] The table or view `lake`.`db`.`no_such_table` cannot be found")
    assert "\tat " not in message and "UnresolvedRelation" not in message  # no Java stack, no plan
    assert info.value.error_class == "TABLE_OR_VIEW_NOT_FOUND"
    assert info.value.statement == "SELECT * FROM lake.db.no_such_table"


def test_one_value_statements_inform_and_never_fail_the_job(spark):
    report = spark.run(SparkJob(["SELECT count(*) FROM range(7)", "SELECT nope FROM range(1)", "SELECT 1 AS one"],
                                values=(0, 1), want_result=True))
    counted, failed, last = report.statements
    assert counted["value"] == 7 and "error" not in counted
    assert failed["value"] is None and "UNRESOLVED_COLUMN" in failed["error"] and "\tat " not in failed["error"]
    assert "value" not in last and report.result.column(0).to_pylist() == [1]


def test_merge_cardinality_violation_changes_nothing(spark, lake):
    spark.run(SparkJob([f"CREATE TABLE lake.db.card (id BIGINT, v STRING) USING iceberg {MOR}",
                        "INSERT INTO lake.db.card VALUES (1, 'a'), (2, 'b')"]))
    before_snapshot, before_rows = lake.snapshot_id("card"), lake.read("card")
    with pytest.raises(ExecutionError) as info:
        spark.run(SparkJob([("MERGE INTO lake.db.card t USING (SELECT 1 AS id, 'x' AS v UNION ALL SELECT 1, 'y') s "
                            "ON t.id = s.id WHEN MATCHED THEN UPDATE SET v = s.v")]))
    assert str(info.value).startswith("[MERGE_CARDINALITY_VIOLATION] The ON search condition of the MERGE statement "
                                      "matched a single row from the target table with multiple rows")
    assert "\tat " not in str(info.value) and "Job aborted" not in str(info.value)
    assert "MergeRowsExec" in info.value.remote_traceback  # the Java detail is kept aside
    assert lake.snapshot_id("card") == before_snapshot
    assert lake.read("card").equals(before_rows)


def test_timeout_cancels_and_the_next_job_runs(spark):
    spark.run(SparkJob(["SELECT 1"]))
    old_pid, starts = spark.pid, spark.starts
    t0 = time.monotonic()
    with pytest.raises(QueryCancelled, match="timeout of 1.5 s"):
        spark.run(SparkJob(["SELECT count(*) FROM range(1000000000000)"]), timeout=1.5)
    assert time.monotonic() - t0 < 15
    assert not psutil.pid_exists(old_pid) or psutil.Process(old_pid).status() == psutil.STATUS_ZOMBIE
    report = spark.run(SparkJob(["SELECT 41 + 1 AS x"], want_result=True))
    assert report.result.to_pylist() == [{"x": 42}] and spark.starts == starts + 1


def _spark_pids(driver_pid: int) -> list[int]:
    proc = psutil.Process(driver_pid)
    return [driver_pid] + [c.pid for c in proc.children(recursive=True)]


def _gone(pids: list[int], within_s: float) -> list[int]:
    end = time.monotonic() + within_s
    while True:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if not alive or time.monotonic() > end:
            return alive
        time.sleep(0.1)


def test_close_leaves_no_java_process(lake):
    client = make_client(SparkSettings.resolve({**SETTINGS, "master": "local[1]"}), lake.catalogs, S3Config())
    client.run(SparkJob(["SELECT 1"]))
    pids = _spark_pids(client.pid)
    assert any("java" in psutil.Process(p).name() for p in pids), pids
    client.close()
    assert _gone(pids, 1.0) == []
    with pytest.raises(PuffinError, match="closed"):
        client.run(SparkJob(["SELECT 1"]))


def test_spark_dies_with_its_parent(lake, tmp_path):
    """No JVM outlives a Python process that is killed outright (no close, no atexit)."""
    script = textwrap.dedent(f"""
        import json, os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        from puffin.spark.client import SparkJob, make_client
        from puffin.spark.settings import SparkSettings
        from puffin.storage import S3Config
        client = make_client(SparkSettings.resolve({{"master": "local[1]", "driver_memory": "512m"}}),
                             json.loads({json.dumps(json.dumps(lake.catalogs))}), S3Config())
        client.run(SparkJob(["SELECT 1"]))
        print(client.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    driver = int(proc.stdout.split()[0])
    pids = [driver] + ([c.pid for c in psutil.Process(driver).children(recursive=True)]
                       if psutil.pid_exists(driver) else [])
    assert _gone(pids, 10.0) == []


def test_one_shot_job_mode(lake, tmp_path):
    """``driver.py --job``, as spark-submit runs it on EMR: report and result files, exit code."""
    from puffin.spark import driver

    conf = spark_conf(lake.catalogs, S3Config(), SparkSettings.resolve({**SETTINGS, "master": "local[1]"}))
    conf["spark.local.dir"] = str(tmp_path)
    conf["spark.driver.extraJavaOptions"] = LOCAL_JAVA_OPTIONS
    job = {"conf": conf, "inputs": [], "statements": [
        "CREATE TABLE lake.db.oneshot USING iceberg AS SELECT CAST(id AS BIGINT) id, 'v' v FROM range(3)",
        "SELECT max(id) AS top FROM lake.db.oneshot"],
        "result": f"file://{tmp_path}/result", "report": str(tmp_path / "report.json")}
    (tmp_path / "job.json").write_text(json.dumps(job))
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    env.pop("SPARK_HOME", None)
    proc = subprocess.run([sys.executable, driver.__file__, "--job", f"file://{tmp_path}/job.json"],
                          check=False, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ok"] and report["columns"] == ["top"] and report["statements"][0]["rows"] == 3
    assert report["statements"][0]["snapshot_id"] == lake.snapshot_id("oneshot")
    assert pq.read_table(tmp_path / "result")["_c0"].to_pylist() == [2]


# --- settings, conf, client choice: no Spark needed -----------------------------------------

def test_settings_are_checked():
    s = SparkSettings.resolve({"extra_jars": ["/x.jar"], "conf": {"spark.a": 1, "spark.b": True}, "timeout_s": 5})
    assert (s.mode, s.master, s.extra_jars, s.conf, s.timeout_s) == (
        "local", "local[2]", ("/x.jar",), {"spark.a": "1", "spark.b": "true"}, 5.0)
    with pytest.raises(PuffinError, match="unknown spark setting.*valid: mode, master"):
        SparkSettings.resolve({"mster": "local"})
    with pytest.raises(PuffinError, match="not one of local, emr, emr-serverless, off"):
        SparkSettings.resolve({"mode": "yarn"})
    with pytest.raises(PuffinError, match="cluster_id"):
        SparkSettings.resolve({"mode": "emr", "staging": "s3://b/p/"})
    with pytest.raises(PuffinError, match="staging"):
        SparkSettings.resolve({"mode": "emr-serverless", "application_id": "a", "execution_role_arn": "r"})
    with pytest.raises(PuffinError, match="positive"):
        SparkSettings.resolve({"timeout_s": 0})
    with pytest.raises(NotSupportedError, match=r'spark=\{"mode": "local"\}'):
        make_client(SparkSettings.resolve({"mode": "off"}), {}, S3Config())


def test_catalog_conf():
    s3 = S3Config(endpoint_url="http://127.0.0.1:9000", region="eu-west-1", access_key_id=Secret("k"),
                  secret_access_key=Secret("s"))
    sql = catalog_conf("lake", {"type": "sql", "uri": "sqlite:////abs/c.db", "warehouse": "s3://b/wh"}, s3)
    assert sql == {
        "spark.sql.catalog.lake": "org.apache.iceberg.spark.SparkCatalog",
        "spark.sql.catalog.lake.catalog-impl": "org.apache.iceberg.jdbc.JdbcCatalog",
        "spark.sql.catalog.lake.uri": "jdbc:sqlite:/abs/c.db",
        "spark.sql.catalog.lake.jdbc.schema-version": "V1",
        "spark.sql.catalog.lake.cache-enabled": "false",
        "spark.sql.catalog.lake.warehouse": "s3://b/wh",
        "spark.sql.catalog.lake.io-impl": "org.apache.iceberg.aws.s3.S3FileIO",
        "spark.sql.catalog.lake.client.region": "eu-west-1",
        "spark.sql.catalog.lake.s3.endpoint": "http://127.0.0.1:9000",
        "spark.sql.catalog.lake.s3.path-style-access": "true",
        "spark.sql.catalog.lake.s3.access-key-id": "k",
        "spark.sql.catalog.lake.s3.secret-access-key": "s",
    }
    pg = catalog_conf("pg", {"type": "sql", "uri": "postgresql+psycopg2://u:p%40ss@db:5433/ice", "warehouse": "file:///w"},
                      S3Config(), credentials=False)
    assert (pg["spark.sql.catalog.pg.uri"], pg["spark.sql.catalog.pg.jdbc.user"],
            pg["spark.sql.catalog.pg.jdbc.password"]) == ("jdbc:postgresql://db:5433/ice", "u", "p@ss")
    rest = catalog_conf("r", {"uri": "http://rest:8181", "warehouse": "wh", "credential": "id:secret"}, s3,
                        credentials=False)
    assert rest["spark.sql.catalog.r.type"] == "rest" and rest["spark.sql.catalog.r.uri"] == "http://rest:8181"
    assert rest["spark.sql.catalog.r.credential"] == "id:secret" and "spark.sql.catalog.r.s3.access-key-id" not in rest
    glue = catalog_conf("g", {"type": "glue", "warehouse": "s3://b/wh", "glue.id": "123"}, S3Config(region="us-east-1"))
    assert glue["spark.sql.catalog.g.catalog-impl"] == "org.apache.iceberg.aws.glue.GlueCatalog"
    assert glue["spark.sql.catalog.g.io-impl"] == "org.apache.iceberg.aws.s3.S3FileIO"
    assert glue["spark.sql.catalog.g.glue.id"] == "123"
    with pytest.raises(NotSupportedError, match="type 'hive'"):
        catalog_conf("h", {"uri": "thrift://metastore:9083"}, s3)
    with pytest.raises(NotSupportedError, match="in-memory SQLite"):
        catalog_conf("m", {"type": "sql", "uri": "sqlite:///:memory:"}, s3)


def test_spark_conf_defaults_and_missing_jars(monkeypatch, tmp_path):
    catalogs = {"a": {"type": "sql", "uri": f"sqlite:///{tmp_path}/c.db", "warehouse": f"file://{tmp_path}"},
                "b": {"type": "rest", "uri": "http://rest:8181"}}
    emr = spark_conf(catalogs, S3Config(), SparkSettings.resolve({"mode": "emr", "cluster_id": "j-1",
                                                                  "staging": "s3://b/p/", "conf": {"x": "y"}}))
    assert emr["spark.sql.defaultCatalog"] == "a" and emr["spark.sql.session.timeZone"] == "UTC"
    assert emr["spark.sql.catalogImplementation"] == "in-memory" and emr["x"] == "y"
    assert "IcebergSparkSessionExtensions" in emr["spark.sql.extensions"] and "spark.master" not in emr
    monkeypatch.setenv("PUFFIN_ICEBERG_SPARK_JAR", str(tmp_path / "nope.jar"))
    with pytest.raises(PuffinError, match="nope.jar.*bash scripts/install_spark_iceberg.sh"):
        spark_conf(catalogs, S3Config(), SparkSettings.resolve({}))


def test_spark_that_cannot_start_says_why(lake):
    skip_without_spark()
    bad = SparkSettings.resolve({**SETTINGS, "conf": {"spark.driver.memory": "1x"}})
    with make_client(bad, lake.catalogs, S3Config()) as client, pytest.raises(PuffinError, match="did not start"):
        client.run(SparkJob(["SELECT 1"]))
