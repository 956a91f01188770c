"""The EMR clients (puffin.spark.emr) end to end: real boto3 calls to moto's server, and the
submitted driver script run by local spark-submit (tests/spark/emr_harness.py plays EMR: it
runs the steps and job runs moto records and moves them to their end states).

Spark runs here take ~7-12 s each on a quiet 2-core machine (JVM start-up included); there are five.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from puffin.errors import ExecutionError, PuffinError, QueryCancelled
from puffin.spark import SparkInput, SparkJob, SparkSettings, make_client
from puffin.spark import conf as spark_conf_module
from puffin.spark.emr import EmrServerlessClient, EmrStepsClient, split_s3
from puffin.storage import S3Config

pytest.importorskip("moto.server", reason="moto[server] is in the dev extra: pip install -e '.[dev]'")
from tests.iceberg.spark_writer import spark_available

SPARK_MISSING = spark_available()
needs_spark = pytest.mark.skipif(SPARK_MISSING is not None, reason=f"local Spark + Iceberg: {SPARK_MISSING}")

HARNESS = Path(__file__).with_name("emr_harness.py")
DRIVER = Path(spark_conf_module.__file__).with_name("driver.py")
BUCKET = "puffin-emr"
STAGING = f"s3://{BUCKET}/staging/"
ROLE = "arn:aws:iam::123456789012:role/puffin-emr-serverless"
SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.string())])
BOTO_WORDS = ("botocore", "An error occurred", "ClientError", "Traceback")


class Aws:
    """The harness's endpoint, clients for it, and the clusters / applications the tests use."""

    def __init__(self, endpoint: str, log_path: Path):
        self.endpoint, self.log_path = endpoint, log_path
        kw = {"endpoint_url": endpoint, "region_name": "us-east-1", "aws_access_key_id": "testing",
              "aws_secret_access_key": "testing"}
        self.s3, self.emr, self.serverless = (boto3.client(s, **kw) for s in ("s3", "emr", "emr-serverless"))
        self.s3.create_bucket(Bucket=BUCKET)
        self.cluster = self.new_cluster("puffin-test", {})
        self.held_cluster = self.new_cluster("puffin-held", {"puffin-harness": "hold"})
        self.app = self.new_app("puffin-test", {})
        self.held_app = self.new_app("puffin-held", {"puffin-harness": "hold"})

    def new_cluster(self, name: str, tags: dict) -> str:
        return self.emr.run_job_flow(
            Name=name, ReleaseLabel="emr-7.5.0", LogUri=f"s3://{BUCKET}/emr-logs/",
            Applications=[{"Name": "Spark"}],
            Instances={"MasterInstanceType": "m5.xlarge", "InstanceCount": 1, "KeepJobFlowAliveWhenNoSteps": True},
            JobFlowRole="EMR_EC2_DefaultRole", ServiceRole="EMR_DefaultRole",
            Tags=[{"Key": k, "Value": v} for k, v in tags.items()])["JobFlowId"]

    def new_app(self, name: str, tags: dict) -> str:
        return self.serverless.create_application(name=name, releaseLabel="emr-7.5.0", type="SPARK",
                                                  tags=tags)["applicationId"]

    def s3_config(self) -> S3Config:
        return S3Config.resolve({"endpoint_url": self.endpoint, "access_key_id": "testing",
                                 "secret_access_key": "testing", "region": "us-east-1"})

    def settings(self, mode: str, **kw) -> SparkSettings:
        base = {"mode": mode, "endpoint_url": self.endpoint, "region": "us-east-1", "staging": STAGING,
                "poll_s": 0.2}
        if mode == "emr":
            base["cluster_id"] = self.cluster
        else:
            base.update(application_id=self.app, execution_role_arn=ROLE)
        return SparkSettings.resolve({**base, **kw})

    def get(self, uri: str) -> bytes:
        bucket, key = split_s3(uri)
        return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()

    def keys(self, uri: str) -> list[str]:
        bucket, prefix = split_s3(uri)
        return [o["Key"] for o in self.s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]

    def log_tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-40:])


@pytest.fixture(scope="module")
def aws(tmp_path_factory):
    work = tmp_path_factory.mktemp("emr-harness")
    log_path = work / "harness.log"
    jars = os.pathsep.join([str(spark_conf_module.runtime_jar()), str(spark_conf_module.sqlite_jdbc_jar())])
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, str(HARNESS), "--work", str(work), "--jars", jars],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env, text=True)
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        pytest.fail(f"the EMR harness did not start: {line!r}\n{log_path.read_text(errors='replace')}")
    try:
        yield Aws(line.split("listening on ")[1].strip(), log_path)
    finally:
        proc.stdin.close()  # the harness exits, killing any spark-submit of its own
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def iceberg(tmp_path):
    """A pyiceberg SQL catalog on SQLite with a file:// warehouse, as Puffin and Spark share it."""
    from pyiceberg.catalog.sql import SqlCatalog

    props = {"type": "sql", "uri": f"sqlite:///{tmp_path}/catalog.db", "warehouse": f"file://{tmp_path}/wh"}
    catalog = SqlCatalog("lake", **{k: v for k, v in props.items() if k != "type"})
    catalog.create_namespace("db")
    table = catalog.create_table("db.t", schema=SCHEMA)
    table.append(pa.table({"id": [1, 2, 3], "v": ["a", "b", "c"]}, schema=SCHEMA))
    return catalog, {"lake": props}, tmp_path


def assert_driver(aws: Aws, uri: str) -> None:
    """uri holds puffin/spark/driver.py (as the client read it), staged under its content hash."""
    body = aws.get(uri)
    assert uri == f"{STAGING}driver/{hashlib.sha256(body).hexdigest()[:16]}/driver.py"
    assert body.startswith(DRIVER.read_bytes()[:40]) and b"def run_once(" in body


def rows(catalog) -> list[tuple]:
    t = catalog.load_table("db.t").scan().to_arrow().sort_by("id")
    return list(zip(t["id"].to_pylist(), t["v"].to_pylist()))


INSERT = "INSERT INTO lake.db.t SELECT id, v FROM more"
MERGE = ("MERGE INTO lake.db.t t USING updates u ON t.id = u.id "
         "WHEN MATCHED THEN UPDATE SET t.v = u.v WHEN NOT MATCHED THEN INSERT *")
READ_BACK = "SELECT id, v FROM lake.db.t ORDER BY id"
AFTER_INSERT = [(1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "e")]
AFTER_MERGE = [(1, "a"), (2, "B"), (3, "c"), (4, "d"), (5, "e"), (6, "f")]


def inputs(tmp_path: Path) -> tuple[SparkInput, SparkInput]:
    """Local inputs the client stages to S3: ``more`` a file, ``updates`` a directory of two."""
    more = tmp_path / "more.parquet"
    pq.write_table(pa.table({"id": [4, 5], "v": ["d", "e"]}, schema=SCHEMA), more)
    updates = tmp_path / "updates"
    updates.mkdir()
    pq.write_table(pa.table({"id": [2], "v": ["B"]}, schema=SCHEMA), updates / "part-0.parquet")
    pq.write_table(pa.table({"id": [6], "v": ["f"]}, schema=SCHEMA), updates / "part-1.parquet")
    return SparkInput("more", str(more)), SparkInput("updates", f"file://{updates}")


def check_merge(report, catalog) -> None:
    """The MERGE's report, result rows and the table as pyiceberg reads it from the catalog."""
    assert rows(catalog) == AFTER_MERGE
    assert report.result.column_names == ["id", "v"]
    assert list(zip(*(report.result[c].to_pylist() for c in ("id", "v")))) == AFTER_MERGE
    merge = next(s for s in report.statements if s.get("kind") == "merge")
    assert merge["snapshot_id"] == catalog.load_table("db.t").current_snapshot().snapshot_id
    assert report.seconds > 0 and "@@puffin statement" in report.log_tail


@needs_spark
def test_steps_insert_and_merge_end_to_end(aws, iceberg):
    catalog, catalogs, tmp_path = iceberg
    settings = aws.settings("emr", spark_submit_args=["--conf", "spark.sql.shuffle.partitions=1"])
    states = []
    client = EmrStepsClient(settings, catalogs, aws.s3_config(), progress=lambda state, text: states.append(text))
    more, updates = inputs(tmp_path)
    inserted = client.run(SparkJob([INSERT], [more]))  # two jobs, one client (one driver upload)
    assert inserted.result is None and rows(catalog) == AFTER_INSERT
    assert inserted.statements[0]["kind"] == "insert" and inserted.statements[0]["rows"] == 2
    assert inserted.statements[0]["snapshot_id"] == catalog.load_table("db.t").current_snapshot().snapshot_id
    check_merge(client.run(SparkJob([MERGE, READ_BACK], [updates], want_result=True)), catalog)

    # what EMR was asked to run: the last step, exactly
    step = aws.emr.describe_step(ClusterId=aws.cluster, StepId=client.last_run["id"])["Step"]
    job_uri = client.last_run["job"]
    driver_uri = step["Config"]["Args"][5]
    assert step["Config"]["Jar"] == "command-runner.jar" and step["ActionOnFailure"] == "CONTINUE"
    assert step["Config"]["Args"] == ["spark-submit", "--deploy-mode", "cluster", "--conf",
                                      "spark.sql.shuffle.partitions=1", driver_uri, "--job", job_uri]
    assert step["Status"]["State"] == "COMPLETED"
    seen = [s for s, _ in client.last_run["states"]]
    assert "RUNNING" in seen and seen[-1] == "COMPLETED"
    assert any("COMPLETED" in text and client.last_run["id"] in text for text in states)
    assert_driver(aws, driver_uri)
    job = json.loads(aws.get(job_uri))
    assert job["conf"] == spark_conf_module.spark_conf(catalogs, aws.s3_config(), settings)
    assert job["conf"]["spark.sql.catalog.lake.uri"] == f"jdbc:sqlite:{tmp_path}/catalog.db"
    assert job["inputs"] == [{"name": "updates", "path": job_uri.replace("job.json", "inputs/updates/"),
                              "format": "parquet"}]
    assert job["result"] == job_uri.replace("job.json", "result/") and job["report"].endswith("/report.json")
    assert json.loads(aws.get(job["report"]))["ok"] is True
    assert aws.keys(job["inputs"][0]["path"]) == [] and aws.keys(job["result"]) == []  # cleaned up


@needs_spark
def test_serverless_insert_and_merge_end_to_end(aws, iceberg):
    catalog, catalogs, tmp_path = iceberg
    settings = aws.settings("emr-serverless", spark_submit_args=["--conf", "spark.executor.cores=1"])
    client = make_client(settings, catalogs, aws.s3_config())
    assert isinstance(client, EmrServerlessClient)
    report = client.run(SparkJob([INSERT, MERGE, READ_BACK], list(inputs(tmp_path)), want_result=True))
    assert report.statements[0]["kind"] == "insert" and report.statements[0]["rows"] == 2
    check_merge(report, catalog)

    run = aws.serverless.get_job_run(applicationId=aws.app, jobRunId=client.last_run["id"])["jobRun"]
    submit = run["jobDriver"]["sparkSubmit"]
    assert run["state"] == "SUCCESS" and run["executionRole"] == ROLE
    assert_driver(aws, submit["entryPoint"])
    assert submit["entryPointArguments"] == ["--job", client.last_run["job"]]
    conf = spark_conf_module.spark_conf(catalogs, aws.s3_config(), settings)
    assert submit["sparkSubmitParameters"] == " ".join(
        ["--conf", "spark.executor.cores=1", *(a for k, v in conf.items() for a in ("--conf", f"{k}={v}"))])
    assert "--conf spark.sql.catalog.lake.catalog-impl=org.apache.iceberg.jdbc.JdbcCatalog" in submit["sparkSubmitParameters"]
    seen = [s for s, _ in client.last_run["states"]]
    assert "RUNNING" in seen and seen[-1] == "SUCCESS"


@needs_spark
@pytest.mark.parametrize("mode", ["emr", "emr-serverless"])
def test_failing_statement_is_spark_message(aws, iceberg, mode):
    catalog, catalogs, _ = iceberg
    client = make_client(aws.settings(mode), catalogs, aws.s3_config())
    with pytest.raises(ExecutionError) as e:
        client.run(SparkJob(["INSERT INTO lake.db.t VALUES (9, 'z')", "INSERT INTO lake.db.nope SELECT 1"]))
    text = str(e.value)
    assert "TABLE_OR_VIEW_NOT_FOUND" in text and "nope" in text, aws.log_tail()
    assert "statement 2 of 2" in text and client.last_run["id"] in text
    assert not any(w in text for w in BOTO_WORDS)
    assert e.value.remote_traceback  # the driver's log tail
    assert [s for s, _ in client.last_run["states"]][-1] == "FAILED"
    assert rows(catalog)[-1] == (9, "z")  # statement 1 committed before statement 2 failed


@needs_spark
def test_step_that_fails_before_the_driver_reports(aws, iceberg):
    _, catalogs, _ = iceberg
    client = EmrStepsClient(aws.settings("emr", spark_submit_args=["--no-such-option", "x"]), catalogs,
                            aws.s3_config())
    with pytest.raises(ExecutionError) as e:
        client.run(SparkJob(["SELECT 1"]))
    text = str(e.value)
    assert "ended FAILED before the driver reported" in text
    assert "spark-submit exited with status 1" in text and "no-such-option" in text, aws.log_tail()
    assert f"s3://{BUCKET}/emr-logs/{aws.cluster}/steps/{client.last_run['id']}/stderr.gz" in text


def test_step_timeout_cancels_the_step(aws, iceberg):
    _, catalogs, _ = iceberg
    client = EmrStepsClient(aws.settings("emr", cluster_id=aws.held_cluster), catalogs, aws.s3_config())
    started = time.monotonic()
    with pytest.raises(QueryCancelled, match="timeout of 1s"):
        client.run(SparkJob(["SELECT 1"]), timeout=1.0)
    assert time.monotonic() - started < 5
    step = aws.emr.describe_step(ClusterId=aws.held_cluster, StepId=client.last_run["id"])["Step"]
    assert step["Status"]["State"] == "CANCELLED"  # cancel_steps was called
    args = step["Config"]["Args"]
    assert args == ["spark-submit", "--deploy-mode", "cluster", args[3], "--job", client.last_run["job"]]
    assert json.loads(aws.get(client.last_run["job"]))["statements"] == ["SELECT 1"]


def test_job_run_timeout_cancels_the_run(aws, iceberg):
    _, catalogs, _ = iceberg
    settings = aws.settings("emr-serverless", application_id=aws.held_app, timeout_s=1.0)
    client = EmrServerlessClient(settings, catalogs, aws.s3_config())
    with pytest.raises(QueryCancelled, match="EMR Serverless job run"):
        client.run(SparkJob(["SELECT 1"]))
    run = aws.serverless.get_job_run(applicationId=aws.held_app, jobRunId=client.last_run["id"])["jobRun"]
    assert run["state"] == "CANCELLED"
    assert run["executionTimeoutMinutes"] == 5  # EMR's own backstop: at least 5 minutes
    assert run["configurationOverrides"]["monitoringConfiguration"]["s3MonitoringConfiguration"]["logUri"] == \
        f"{STAGING}logs/"


def test_aws_refusals_are_clear(aws, iceberg):
    _, catalogs, _ = iceberg
    s3 = aws.s3_config()
    cases = [
        (EmrStepsClient(aws.settings("emr", cluster_id="j-NOSUCHCLUSTER1"), catalogs, s3),
         ["EMR cluster j-NOSUCHCLUSTER1 was not found in region us-east-1", "is not valid"]),
        (EmrServerlessClient(aws.settings("emr-serverless", application_id="nosuchapp"), catalogs, s3),
         ["EMR Serverless application nosuchapp was not found", "does not exist"]),
        (EmrStepsClient(aws.settings("emr", staging="s3://no-such-bucket/x/"), catalogs, s3),
         ["the staging bucket of s3://no-such-bucket/x/jobs/", "does not exist"]),
    ]
    gone = aws.new_cluster("puffin-gone", {})
    aws.emr.terminate_job_flows(JobFlowIds=[gone])
    cases.append((EmrStepsClient(aws.settings("emr", cluster_id=gone), catalogs, s3), [f"{gone} is TERMINATED"]))
    for client, words in cases:
        with pytest.raises(PuffinError) as e:
            client.run(SparkJob(["SELECT 1"]))
        text = str(e.value)
        assert all(w in text for w in words), text
        assert not any(w in text for w in BOTO_WORDS), text
        assert "testing" not in text  # no credential in a message
