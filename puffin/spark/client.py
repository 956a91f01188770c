"""The one interface Puffin uses to run Spark SQL, whichever Spark runs it.

A ``SparkJob`` is a list of Spark SQL statements (see ``puffin.spark.transpile``) run in order
in one Spark session, with ``inputs`` registered first as temporary views (e.g. rows Puffin
computed, written as Parquet, for a MERGE source). ``want_result`` brings the last statement's
rows back as an Arrow table, ``values`` the one value of the statements it names (the rows an
UPDATE or MERGE will change, counted just before it). A client runs it and returns a ``SparkReport`` (per-statement
seconds, and for writes the Iceberg table, its new snapshot and ``rows``: see
``puffin/spark/driver.py`` for the rule), or raises ``ExecutionError`` with Spark's message,
``QueryCancelled`` past the timeout, or ``PuffinError`` when Spark cannot start.

``make_client`` picks the client for ``SparkSettings.mode``: ``LocalSpark`` (pyspark on this
machine) or, imported only when asked for, the EMR step / EMR Serverless clients.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import pyarrow as pa

from puffin.errors import NotSupportedError
from puffin.spark.settings import SparkSettings
from puffin.storage import S3Config


@dataclass
class SparkInput:
    """A table Spark reads as temp view ``name`` before the statements run.

    path: a local path, ``file://`` or ``s3://`` URI of a file or a directory of files.
    """

    name: str
    path: str
    format: str = "parquet"


@dataclass
class SparkJob:
    statements: list[str]
    inputs: list[SparkInput] = field(default_factory=list)
    want_result: bool = False  # the last statement's rows come back in SparkReport.result
    # statements (by index) that are one-value queries (a count): the driver collects the value
    # into that statement's report entry as "value"; one that fails gives "value": None and
    # "error" instead of failing the job
    values: tuple[int, ...] = ()


@dataclass
class SparkReport:
    result: pa.Table | None
    statements: list[dict]  # {"sql", "seconds"} and, for writes, table/snapshot_id/summary/rows
    seconds: float
    log_tail: str


class SparkClient(abc.ABC):
    """Runs SparkJobs, one at a time; close() releases whatever Spark it holds."""

    @abc.abstractmethod
    def run(self, job: SparkJob, timeout: float | None = None) -> SparkReport:
        """Run the job; timeout (seconds, None = the settings' timeout_s) -> QueryCancelled."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop Spark (idempotent)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_client(settings: SparkSettings, catalogs: dict[str, dict], s3: S3Config) -> SparkClient:
    """The client for ``settings.mode``; NotSupportedError when Spark is turned off."""
    if settings.mode == "local":
        from puffin.spark.local import LocalSpark

        return LocalSpark(settings, catalogs, s3)
    if settings.mode in ("emr", "emr-serverless"):
        from puffin.spark import emr

        cls = emr.EmrStepsClient if settings.mode == "emr" else emr.EmrServerlessClient
        return cls(settings, catalogs, s3)
    raise NotSupportedError("this statement needs Spark (Iceberg MERGE / UPDATE / DELETE and rewrites run "
                            "there), which is off; connect with spark={\"mode\": \"local\"} (pyspark on this "
                            "machine) or an EMR mode")
