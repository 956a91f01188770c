"""Fixtures for the Spark route: a pyiceberg SQL catalog on SQLite shared with one local Spark.

Spark's JVM takes seconds to start, so one ``LocalSpark`` serves the whole session; every test
writes tables of its own name in namespace ``db`` of catalog ``lake``. Tests skip (with what to
install) where Java, pyspark 3.5 or the Iceberg jars are missing: ``bash
scripts/install_spark_iceberg.sh``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest

from puffin.spark.conf import local_spark_missing
from puffin.spark.settings import SparkSettings
from puffin.storage import S3Config

# Small and quick for a 2-core machine: 2 task slots, 2 shuffle partitions.
SETTINGS = {"master": "local[2]", "driver_memory": "768m", "conf": {"spark.sql.shuffle.partitions": "2"}}


@dataclass
class Lake:
    dir: Path
    catalogs: dict[str, dict]  # as puffin.connect(catalogs=...) takes them
    catalog: object  # pyiceberg SqlCatalog "lake" on the same SQLite file

    def read(self, name: str, sort: str = "id") -> pa.Table:
        """The table's rows as pyiceberg reads them (position deletes applied), sorted."""
        return self.catalog.load_table(f"db.{name}").scan().to_arrow().sort_by(sort)

    def snapshot_id(self, name: str) -> int | None:
        snap = self.catalog.load_table(f"db.{name}").current_snapshot()
        return snap.snapshot_id if snap else None


def skip_without_spark() -> None:
    reason = local_spark_missing()
    if reason:
        pytest.skip(f"local Spark + Iceberg unavailable: {reason}")


@pytest.fixture(scope="session")
def lake(tmp_path_factory) -> Lake:
    skip_without_spark()
    from pyiceberg.catalog.sql import SqlCatalog

    d = tmp_path_factory.mktemp("spark-lake")
    props = {"type": "sql", "uri": f"sqlite:///{d}/catalog.db", "warehouse": f"file://{d}/wh"}
    catalog = SqlCatalog("lake", uri=props["uri"], warehouse=props["warehouse"])
    catalog.create_namespace("db")
    return Lake(d, {"lake": props}, catalog)


@pytest.fixture(scope="session")
def spark(lake):
    from puffin.spark.local import LocalSpark

    client = LocalSpark(SparkSettings.resolve(SETTINGS), lake.catalogs, S3Config())
    yield client
    client.close()
