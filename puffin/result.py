"""Query results: Arrow underneath, printed like DuckDB's tables."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from puffin import signals


class Result:
    def __init__(self, table: pa.Table, text: str | None = None):
        self._table = table
        self._text = text  # EXPLAIN output prints as text, not as a table

    def arrow(self) -> pa.Table:
        return self._table

    def to_pandas(self):
        return self._table.to_pandas()

    df = to_pandas

    def fetchall(self) -> list[tuple[Any, ...]]:
        cols = [c.to_pylist() for c in self._table.columns]
        return list(zip(*cols)) if cols else []

    @property
    def columns(self) -> list[str]:
        return self._table.column_names

    def __len__(self) -> int:
        return self._table.num_rows

    def show(self, max_rows: int = 40) -> None:
        print(self.render(max_rows))

    def render(self, max_rows: int = 40) -> str:
        if self._text is not None:
            return self._text
        con = signals.connect()
        try:
            # DuckDB's own box renderer; plain string columns keep its output stable.
            rel = con.from_arrow(_plain_strings(self._table))
            return rel.__str__() if self._table.num_rows <= max_rows else str(rel.limit(max_rows)) + (
                f"\n({self._table.num_rows} rows, {max_rows} shown)"
            )
        finally:
            con.close()

    def __str__(self) -> str:
        return self.render()

    def __repr__(self) -> str:
        return self.render()


def _plain_strings(t: pa.Table) -> pa.Table:
    if not any(pa.types.is_string_view(f.type) for f in t.schema):
        return t
    schema = pa.schema([pa.field(f.name, pa.string()) if pa.types.is_string_view(f.type) else f for f in t.schema])
    return t.cast(schema)
