"""Apache DataFusion (Python bindings), a single-node reference: Parquet tables in a
``SessionContext`` with default settings (all cores)."""

from __future__ import annotations


class Engine:
    def __init__(self) -> None:
        import datafusion

        self.datafusion = datafusion
        self.ctx = datafusion.SessionContext()

    def version(self) -> str:
        return self.datafusion.__version__

    def load(self, tables: dict[str, str]) -> None:
        for name, path in tables.items():
            self.ctx.register_parquet(name, path, file_extension=".parquet")

    def run(self, sql: str):
        return self.ctx.sql(sql).to_arrow_table()

    def close(self) -> None:
        pass
