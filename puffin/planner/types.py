"""Arrow types of stages, as DuckDB computes them.

A plan node's names are checked at construction (``logical.py``); a stage's types come from
here: DuckDB binds the stage's statement over *empty* tables of its inputs' types (a scan's:
its source's schema; an exchange's: the schema of the stage that feeds it). So a stage's
output schema is exactly what its fragments produce on real data, and a fragment that happens
to receive no rows still returns that schema (``run_fragment`` casts).
"""

from __future__ import annotations

import threading

import duckdb
import pyarrow as pa

from puffin import signals
from puffin.errors import InternalError
from puffin.planner.logical import Plan, Scan

_local = threading.local()


def _db() -> duckdb.DuckDBPyConnection:
    """One DuckDB per planning thread: typing holds no lock shared between queries."""
    con = getattr(_local, "con", None)
    if con is None:
        con = _local.con = signals.connect()
    return con


def read_schema(scan: Scan) -> pa.Schema:
    """What the scan's reader registers: the source's columns under their own names."""
    return pa.schema([scan.source.schema.field(c).with_nullable(True) for c in scan.columns])


def typed_sql(plan: Plan, sql: str, tables: dict[str, pa.Schema]) -> pa.Schema:
    """The schema ``sql`` (``plan`` rendered, reading ``tables`` by name) produces, named as
    ``plan``'s columns."""
    con = _db().cursor()
    try:
        for name, schema in tables.items():
            con.register(name, schema.empty_table())
        try:
            out = arrow_schema(con, con.sql(sql))
        except duckdb.Error as e:
            raise InternalError(f"DuckDB cannot type a planned {type(plan).__name__}: {e}") from None
    finally:
        con.close()
    return pa.schema([f.with_name(n) for f, n in zip(out, plan.schema)])


_ARROW: dict[str, pa.DataType] = {}  # DuckDB type -> the Arrow type DuckDB returns it as


def arrow_schema(con: duckdb.DuckDBPyConnection, rel: duckdb.DuckDBPyRelation) -> pa.Schema:
    """The Arrow schema of ``rel``'s result, from its bound types (no execution: 0.2 ms where
    fetching an empty result takes 1 ms); each DuckDB type is converted once per process."""
    fields = []
    for name, t in zip(rel.columns, rel.types):
        key = str(t)
        if key not in _ARROW:
            try:
                cast = f"SELECT CAST(NULL AS {key}) AS x"
                _ARROW[key] = con.sql(cast).limit(0).to_arrow_table().schema.field(0).type
            except duckdb.Error:  # a type with no SQL spelling (the NULL literal's): run it empty
                return rel.limit(0).to_arrow_table().schema.remove_metadata()
        fields.append(pa.field(name, _ARROW[key]))
    return pa.schema(fields)
