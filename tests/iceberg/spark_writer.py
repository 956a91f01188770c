"""Real Apache Iceberg writes for the tests: local Spark 3.5 + Iceberg 1.10 in a subprocess.

Spark shares the Iceberg JDBC catalog on SQLite with pyiceberg's ``SqlCatalog`` (same file,
same catalog name, ``jdbc.schema-version=V1``), so a table Spark writes (for instance one with
merge-on-read position delete files) loads in pyiceberg and the other way round.

    reason = spark_available()
    if reason:
        pytest.skip(reason)
    run_spark_sql(
        ["CREATE TABLE lake.db.t (...) USING iceberg TBLPROPERTIES ('format-version'='2', "
         "'write.delete.mode'='merge-on-read')", "DELETE FROM lake.db.t WHERE id = 3"],
        catalog_uri="sqlite:////tmp/x/catalog.db",  # what SqlCatalog(uri=...) was given
        warehouse="file:///tmp/x/wh",
    )

Everything it needs is installed by ``scripts/install_spark_iceberg.sh`` (see README.md here).
Spark runs in a child Python process (the same interpreter), so its JVM never outlives the
call, and a failure raises ``SparkSQLError`` with the failing statement and the log tail.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from puffin.errors import NotSupportedError
from puffin.spark import conf as _puffin_conf
from puffin.storage import S3Config, Secret

INSTALL_HINT = "run scripts/install_spark_iceberg.sh"
# One place knows where the jars are: puffin.spark.conf (PUFFIN_CACHE_DIR, PUFFIN_ICEBERG_SPARK_JAR,
# PUFFIN_SQLITE_JDBC_JAR move them).
CACHE_DIR = _puffin_conf.cache_dir()
RUNTIME_JAR = _puffin_conf.runtime_jar()
SQLITE_JDBC_JAR = _puffin_conf.sqlite_jdbc_jar()
DEFAULT_TIMEOUT_S = 300


class SparkSQLError(RuntimeError):
    """A Spark statement failed (or Spark did not start); the message carries the log tail."""


def _java() -> str | None:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.access(os.path.join(java_home, "bin", "java"), os.X_OK):
        return os.path.join(java_home, "bin", "java")
    return shutil.which("java")


def spark_available() -> str | None:
    """None when local Spark + Iceberg can run here, else why not (a pytest skip reason)."""
    return _puffin_conf.local_spark_missing()


def jdbc_uri(catalog_uri: str) -> str:
    """pyiceberg's SQLAlchemy SQLite URI -> the JDBC URI for the same file.

    ``sqlite:////abs/catalog.db`` -> ``jdbc:sqlite:/abs/catalog.db``; a relative
    ``sqlite:///catalog.db`` is made absolute; ``jdbc:sqlite:...`` passes through.
    """
    if catalog_uri.startswith("jdbc:sqlite:"):
        return catalog_uri
    if not catalog_uri.startswith("sqlite:///"):
        raise ValueError(f"expected a file-backed SQLite URI (sqlite:///path), got {catalog_uri!r}")
    try:
        return _puffin_conf.catalog_conf("c", {"type": "sql", "uri": catalog_uri}, S3Config())["spark.sql.catalog.c.uri"]
    except NotSupportedError as e:  # an in-memory database
        raise ValueError(str(e)) from None


def spark_conf(
    catalog_uri: str,
    warehouse: str,
    catalog_name: str = "lake",
    *,
    s3_endpoint: str | None = None,
    s3_access_key: str | None = None,
    s3_secret_key: str | None = None,
    s3_region: str = "us-east-1",
    extra_jars: list[str] | None = None,
) -> dict[str, str]:
    """The Spark configuration run_spark_sql uses (handy for debugging with pyspark directly).

    The catalog entries are puffin.spark.conf's (the ones Puffin's own Spark route uses).
    """
    classpath = os.pathsep.join([str(RUNTIME_JAR), str(SQLITE_JDBC_JAR), *(extra_jars or [])])
    props = {"type": "sql", "uri": jdbc_uri(catalog_uri), "warehouse": warehouse}
    s3 = S3Config()
    if s3_endpoint is not None:
        # Iceberg's S3FileIO; it needs the AWS SDK v2 (iceberg-aws-bundle) on the class path,
        # which the PyPI runtime jar does not include -- see README.md.
        props["io-impl"] = "org.apache.iceberg.aws.s3.S3FileIO"
        s3 = S3Config(endpoint_url=s3_endpoint, region=s3_region,
                      access_key_id=Secret(s3_access_key or ""), secret_access_key=Secret(s3_secret_key or ""))
    conf = {
        **_puffin_conf.local_conf("local[1]", "768m", classpath),
        "spark.app.name": "puffin-iceberg-writer",
        "spark.sql.shuffle.partitions": "1",
        "spark.default.parallelism": "1",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.catalogImplementation": "in-memory",  # no Hive metastore, no metastore_db/
        "spark.sql.extensions": _puffin_conf.EXTENSIONS,
        "spark.sql.defaultCatalog": catalog_name,
    }
    conf.update(_puffin_conf.catalog_conf(catalog_name, props, s3))
    return conf


# Runs in the child process: reads {"conf": ..., "statements": [...]} as JSON on stdin.
_DRIVER = r"""
import json, sys
job = json.load(sys.stdin)
from pyspark.sql import SparkSession
builder = SparkSession.builder
for k, v in job["conf"].items():
    builder = builder.config(k, v)
spark = builder.getOrCreate()
spark.sparkContext.setLogLevel("WARN")
try:
    for i, statement in enumerate(job["statements"]):
        print(f"@@puffin statement {i}", file=sys.stderr, flush=True)
        spark.sql(statement).collect()
finally:
    spark.stop()
print("@@puffin done", file=sys.stderr, flush=True)
"""


def run_spark_sql(
    statements: list[str],
    catalog_uri: str,
    warehouse: str,
    catalog_name: str = "lake",
    *,
    s3_endpoint: str | None = None,
    s3_access_key: str | None = None,
    s3_secret_key: str | None = None,
    s3_region: str = "us-east-1",
    extra_jars: list[str] | None = None,
    extra_conf: dict[str, str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Run Spark SQL statements, in order, against the Iceberg JDBC catalog ``catalog_name``.

    catalog_uri is pyiceberg's ``sqlite:///path`` (or ``jdbc:sqlite:/path``); catalog_name must
    equal the name pyiceberg's SqlCatalog was given (the catalog_name column both share). It is
    also Spark's default catalog, so ``db.t`` and ``lake.db.t`` name the same table. Raises
    SparkSQLError if a statement fails, Spark does not start, or it runs past timeout_s.
    extra_jars go on the JVM class path after the Iceberg runtime and SQLite JDBC jars (e.g. an
    iceberg-aws-bundle jar, which S3FileIO needs for the s3_* arguments to work); extra_conf
    entries override the generated Spark configuration.
    """
    reason = spark_available()
    if reason is not None:
        raise SparkSQLError(f"local Spark + Iceberg is not available: {reason}")
    conf = spark_conf(
        catalog_uri,
        warehouse,
        catalog_name,
        s3_endpoint=s3_endpoint,
        s3_access_key=s3_access_key,
        s3_secret_key=s3_secret_key,
        s3_region=s3_region,
        extra_jars=extra_jars,
    )
    job = {"statements": list(statements), "conf": {**conf, **(extra_conf or {})}}
    with tempfile.TemporaryDirectory(prefix="puffin-spark-") as work:
        # Spark's scratch files and any spark-warehouse/derby.log land here, not in the repo.
        job["conf"].setdefault("spark.local.dir", work)
        job["conf"].setdefault("spark.sql.warehouse.dir", os.path.join(work, "spark-warehouse"))
        job["conf"].setdefault("spark.driver.extraJavaOptions", f"-Djava.io.tmpdir={work}")
        env = dict(os.environ)
        env.setdefault("PYSPARK_PYTHON", sys.executable)
        env["SPARK_LOCAL_IP"] = "127.0.0.1"
        env.pop("SPARK_HOME", None)  # use the pip-installed pyspark's own launcher and jars
        java = _java()
        if java and not env.get("JAVA_HOME"):
            env["JAVA_HOME"] = str(Path(os.path.realpath(java)).parent.parent)
        if s3_endpoint is not None:
            # The AWS SDK also reads these; keep them consistent with the catalog properties.
            env.update(
                {
                    "AWS_ACCESS_KEY_ID": s3_access_key or "",
                    "AWS_SECRET_ACCESS_KEY": s3_secret_key or "",
                    "AWS_REGION": s3_region,
                }
            )
        # Its own session, so the JVM that pyspark starts under it can be killed with it.
        proc = subprocess.Popen(
            [sys.executable, "-c", _DRIVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=work,
            env=env,
            start_new_session=True,
        )
        try:
            _, stderr = proc.communicate(json.dumps(job), timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            _, stderr = proc.communicate()
            raise SparkSQLError(f"Spark ran past {timeout_s}s\n{_tail(stderr)}") from None
        finally:
            _kill_group(proc)  # nothing of it may outlive the call (normally all gone already)
    if proc.returncode != 0 or "@@puffin done" not in stderr:
        failed = _failed_statement(stderr, statements)
        raise SparkSQLError(
            f"Spark exited with {proc.returncode}"
            + (f" on statement: {failed}" if failed else "")
            + f"\n{_tail(stderr)}"
        )


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


def _failed_statement(stderr: str, statements: list[str]) -> str | None:
    marks = [line for line in stderr.splitlines() if line.startswith("@@puffin statement ")]
    if not marks:
        return None
    return statements[int(marks[-1].rsplit(" ", 1)[1])]


def _tail(text: str | None, n: int = 60) -> str:
    lines = (text or "").splitlines()
    return "\n".join(lines[-n:])
