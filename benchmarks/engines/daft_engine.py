"""Daft on its Ray runner (a local Ray started by ``daft.set_runner_ray()``).

Tables are lazy ``daft.read_parquet`` frames of the plain-string copy of the data, attached
to a ``daft.Session`` that runs each query through Daft's SQL frontend.
"""

from __future__ import annotations


class Engine:
    def __init__(self) -> None:
        import daft

        self.daft = daft
        daft.set_runner_ray()
        self.session = daft.Session()

    def version(self) -> str:
        return self.daft.__version__

    def load(self, tables: dict[str, str]) -> None:
        for name, path in tables.items():
            self.session.create_temp_table(name, self.daft.read_parquet(f"{path}/*.parquet"))

    def run(self, sql: str):
        return self.session.sql(sql).to_arrow()

    def close(self) -> None:
        import ray

        ray.shutdown()
