"""Polars, a single-node reference: lazy ``scan_parquet`` frames in a ``SQLContext``."""

from __future__ import annotations


class Engine:
    def __init__(self) -> None:
        import polars as pl

        self.pl = pl
        self.ctx = pl.SQLContext()

    def version(self) -> str:
        return self.pl.__version__

    def load(self, tables: dict[str, str]) -> None:
        for name, path in tables.items():
            self.ctx.register(name, self.pl.scan_parquet(f"{path}/*.parquet"))

    def run(self, sql: str):
        return self.ctx.execute(sql, eager=False).collect().to_arrow()

    def close(self) -> None:
        pass
