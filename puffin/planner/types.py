"""Arrow types of plan nodes, as DuckDB computes them.

A plan node's names are checked at construction (``logical.py``); its types come from here:
an exchange's from the stage that feeds it, any other node's from DuckDB itself, which binds
the node's SQL over *empty* tables of its inputs' types (a scan's: its source's schema). So a stage's output schema is exactly what its fragments produce on real data, and a
fragment that happens to receive no rows still returns that schema (``run_fragment`` casts).
"""

from __future__ import annotations

import threading

import duckdb
import pyarrow as pa

from puffin.errors import InternalError
from puffin.planner.logical import Exchange, Plan, Scan, walk
from puffin.planner.sqlgen import input_name, to_sql

_local = threading.local()


def _db() -> duckdb.DuckDBPyConnection:
    """One DuckDB per planning thread: typing holds no lock shared between queries."""
    con = getattr(_local, "con", None)
    if con is None:
        con = _local.con = duckdb.connect()
    return con


def read_schema(scan: Scan) -> pa.Schema:
    """What the scan's reader registers: the source's columns under their own names."""
    return pa.schema([scan.source.schema.field(c).with_nullable(True) for c in scan.columns])


def schema_of(plan: Plan) -> pa.Schema:
    """Output names and Arrow types of ``plan`` (memoised on the immutable node)."""
    cached = plan.__dict__.get("_arrow_schema")
    if cached is not None:
        return cached
    if isinstance(plan, Exchange):
        if plan.types is None:
            raise InternalError(f"exchange from stage {plan.stage_id} has no types")
        schema = plan.types
    else:
        schema = _describe(plan)
    object.__setattr__(plan, "_arrow_schema", schema)
    return schema


def _describe(plan: Plan) -> pa.Schema:
    names: dict[int, str] = {}
    tables: dict[str, pa.Schema] = {}
    for node in walk(plan):
        if isinstance(node, Scan) and id(node) not in names:
            names[id(node)] = f"scan_{len(names)}"
            tables[names[id(node)]] = read_schema(node)
        elif isinstance(node, Exchange):
            tables[input_name(node.stage_id)] = schema_of(node)
    return typed_sql(plan, to_sql(plan, names), tables)


def typed_sql(plan: Plan, sql: str, tables: dict[str, pa.Schema]) -> pa.Schema:
    """The schema ``sql`` (``plan`` rendered, reading ``tables`` by name) produces, named as
    ``plan``'s columns; memoised on ``plan``."""
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
    out = pa.schema([f.with_name(n) for f, n in zip(out, plan.schema)])
    object.__setattr__(plan, "_arrow_schema", out)
    return out


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
