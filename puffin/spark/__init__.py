"""The Spark route for Iceberg writes (MERGE, UPDATE, DELETE, INSERT OVERWRITE, rewrites).

Puffin runs its own queries itself; statements that rewrite Iceberg tables go to Spark with
Iceberg's runtime, which does row-level writes (copy-on-write or merge-on-read delete files)
and commits them to the same catalogs Puffin reads:

- ``settings``: ``SparkSettings``, from ``puffin.connect(spark={...})``.
- ``client``: ``SparkJob`` / ``SparkInput`` / ``SparkReport``, the ``SparkClient`` interface
  and ``make_client`` (local pyspark, EMR steps or EMR Serverless).
- ``conf``: Spark conf for Puffin's catalog configs, and the jars local Spark needs.
- ``driver``: the standalone script that runs a job in Spark (locally or by spark-submit).
- ``local``: ``LocalSpark``, one long-lived local driver process.
- ``transpile``: Puffin SQL (DuckDB dialect) to Spark SQL.
"""

from puffin.spark.client import SparkClient, SparkInput, SparkJob, SparkReport, make_client
from puffin.spark.settings import SparkSettings

__all__ = ["SparkClient", "SparkInput", "SparkJob", "SparkReport", "SparkSettings", "make_client"]
