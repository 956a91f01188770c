"""DuckDB, the single-machine bar: native, all cores, one view per table over read_parquet."""

from __future__ import annotations


class Engine:
    def __init__(self) -> None:
        import duckdb

        self._duckdb = duckdb
        self.con = duckdb.connect()  # in-memory; threads default to all cores

    def version(self) -> str:
        return self._duckdb.__version__

    def load(self, tables: dict[str, str]) -> None:
        for name, path in tables.items():
            self.con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet('{path}/*.parquet')")

    def register_arrow(self, name: str, table) -> None:
        self.con.register(name, table)

    def run(self, sql: str):
        return self.con.sql(sql).to_arrow_table()

    def plan(self, sql: str) -> str:
        """The text of EXPLAIN (DuckDB plans, optimises and renders the physical plan)."""
        return "\n".join(str(row[-1]) for row in self.con.execute("EXPLAIN " + sql).fetchall())

    def close(self) -> None:
        self.con.close()
