"""Writing a result as a table (DuckDB's box rendering), CSV, JSON or Parquet."""

from __future__ import annotations

import os
import sys
import tempfile
from typing import IO

import pyarrow as pa

from puffin import signals
from puffin.result import Result

FORMATS = ("table", "csv", "json", "parquet")
MODE_ALIASES = {"box": "table", "duckbox": "table"}


def plain(table: pa.Table) -> pa.Table:
    """string_view / binary_view columns as string / binary: every writer takes those."""
    fields = []
    for f in table.schema:
        if pa.types.is_string_view(f.type):
            f = f.with_type(pa.string())
        elif pa.types.is_binary_view(f.type):
            f = f.with_type(pa.binary())
        fields.append(f)
    schema = pa.schema(fields, metadata=table.schema.metadata)
    return table if schema.equals(table.schema) else table.cast(schema)


def write(result: Result, fmt: str, path: str | None = None, stream: IO[str] | None = None,
          max_rows: int = 40) -> None:
    """``result`` in ``fmt`` to the file at ``path``, else to ``stream`` (stdout).

    CSV and JSON are written by DuckDB's COPY (DuckDB's text for every type: decimals, dates,
    lists, structs; JSON as one array of objects, like the duckdb shell's json mode)."""
    stream = stream or sys.stdout
    if fmt != "parquet" and getattr(result, "_text", None) is not None:
        fmt = "table"  # EXPLAIN's text reads as text in every mode
    if fmt == "table":
        text = result.render(max_rows).rstrip("\n") + "\n"
        if path is None:
            stream.write(text)
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        return
    table = plain(result.arrow())
    if fmt == "parquet":
        if path is None:
            raise ValueError("Parquet output needs a file (--output FILE)")
        import pyarrow.parquet as pq

        pq.write_table(table, path)
        return
    if fmt not in ("csv", "json"):
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    if path is not None:
        _copy(table, fmt, path)
        return
    fd, tmp = tempfile.mkstemp(prefix="puffin-", suffix="." + fmt)
    os.close(fd)
    try:
        _copy(table, fmt, tmp)
        stream.flush()
        with open(tmp, encoding="utf-8") as f:
            text = f.read()
        stream.write(text if text.endswith("\n") or not text else text + "\n")
    finally:
        os.unlink(tmp)


def _copy(table: pa.Table, fmt: str, path: str) -> None:

    options = "FORMAT csv, HEADER true" if fmt == "csv" else "FORMAT json, ARRAY true"
    con = signals.connect()
    try:
        con.register("puffin_result", table)
        quoted = path.replace("'", "''")
        con.execute(f"COPY puffin_result TO '{quoted}' ({options})")
    finally:
        con.close()
