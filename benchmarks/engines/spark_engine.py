"""Spark SQL (pyspark 3.5.x) in ``local[*]`` mode: one temp view per Parquet directory.

Settings follow Spark's docs for one machine: local[*] (all cores), a driver heap sized to
the machine (``driver_memory``, default a third of RAM up to 8g), Arrow for results,
adaptive query execution (on by default in 3.5) and the UI off.
"""

from __future__ import annotations

import os


def _default_driver_memory() -> str:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return "4g"
    return f"{max(1, min(8, total // 3 // 2**30))}g"


class Engine:
    def __init__(self, driver_memory: str | None = None) -> None:
        from pyspark.sql import SparkSession

        self.spark = (
            SparkSession.builder.master("local[*]")
            .appName("puffin-tpch")
            .config("spark.driver.memory", driver_memory or _default_driver_memory())
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.session.timeZone", "UTC")
            .getOrCreate()
        )
        self.spark.sparkContext.setLogLevel("WARN")

    def version(self) -> str:
        return self.spark.version

    def load(self, tables: dict[str, str]) -> None:
        for name, path in tables.items():
            self.spark.read.parquet(path).createOrReplaceTempView(name)

    def run(self, sql: str):
        import pyarrow as pa
        from pyspark.sql.pandas.types import to_arrow_schema

        df = self.spark.sql(sql)
        batches = df._collect_as_arrow()  # pyspark 3.5 has no public toArrow()
        if batches:
            return pa.Table.from_batches(batches)
        return to_arrow_schema(df.schema).empty_table()

    def close(self) -> None:
        self.spark.stop()
