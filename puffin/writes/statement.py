"""What a write statement asks for, and which writer runs it.

| statement                                          | writer                                    |
| -------------------------------------------------- | ----------------------------------------- |
| ``COPY (query) TO 'path'``, ``CREATE TABLE 'path' AS``  | ``FileWrite``: DuckDB in Puffin's tasks   |
| ``INSERT INTO cat.ns.t ...``, ``CREATE TABLE cat.ns.t AS``, ``CREATE TABLE cat.ns.t (cols)`` | ``TableWrite``: Puffin's tasks write data files, one pyiceberg commit |
| ``INSERT OVERWRITE``, ``CREATE OR REPLACE TABLE ... AS``, ``MERGE``, ``UPDATE``, ``DELETE`` | ``SparkWrite``: Spark SQL on the same catalog |
| ``CALL cat.system.procedure(...)`` (Iceberg's table maintenance)  | ``SparkCall``: Spark SQL, as written |

``classify`` reads the statement only; names are resolved by the writers. What none of them
runs is refused here with a ``NotSupportedError`` that names it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from sqlglot import exp

from puffin.errors import NotSupportedError, PuffinError
from puffin.operators.sink import EXTENSIONS

_LEAD = r"^(?:\s+|--[^\n]*\n|/\*.*?\*/)*"  # blanks and comments before the statement
WRITE_START = re.compile(_LEAD + r"\(?\s*(COPY|CREATE|INSERT|MERGE|UPDATE|DELETE|CALL)\b", re.IGNORECASE | re.DOTALL)
_CALL = re.compile(_LEAD + r"CALL\s+(?P<name>[A-Za-z_]\w*(?:\s*\.\s*[A-Za-z_]\w*)*)\s*\((?P<args>.*)\)[\s;]*$",
                   re.IGNORECASE | re.DOTALL)
FILE_FORMATS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json", ".ndjson": "json"}
# COPY options DuckDB takes that Puffin passes to each task's COPY as they are
PASSED = {"COMPRESSION", "ROW_GROUP_SIZE", "ROW_GROUP_SIZE_BYTES", "FIELD_IDS", "PARQUET_VERSION",
          "COMPRESSION_LEVEL", "HEADER", "DELIMITER", "DELIM", "SEP", "QUOTE", "ESCAPE", "NULLSTR",
          "FORCE_QUOTE", "DATEFORMAT", "TIMESTAMPFORMAT", "ARRAY", "KV_METADATA", "DICTIONARY_SIZE_LIMIT"}
# options about the target as a whole, which Puffin decides (tasks write their own files)
HANDLED = {"FORMAT", "PARTITION_BY", "OVERWRITE", "OVERWRITE_OR_IGNORE", "PER_THREAD_OUTPUT",
           "USE_TMP_FILE", "FILENAME_PATTERN", "FILE_EXTENSION"}


def is_write(text: str) -> bool:
    """Whether ``text`` starts like a write statement (a cheap test before parsing)."""
    return WRITE_START.match(text) is not None


@dataclass(frozen=True)
class FileWrite:
    query: exp.Expression  # the rows
    path: str  # a file, or a directory / prefix
    format: str
    partition_by: tuple[str, ...] = ()
    overwrite: bool = False
    options: tuple[tuple[str, str], ...] = ()
    single: bool = True  # one file (DuckDB's COPY without PARTITION_BY / PER_THREAD_OUTPUT)


@dataclass(frozen=True)
class TableWrite:
    op: str  # insert | ctas | create
    table: exp.Table
    query: exp.Expression | None = None
    columns: tuple[str, ...] = ()  # INSERT's column list
    by_name: bool = False  # INSERT ... BY NAME
    if_not_exists: bool = False
    schema: exp.Schema | None = None  # CREATE TABLE's column definitions


@dataclass(frozen=True)
class SparkWrite:
    op: str  # insert overwrite | create or replace | merge | update | delete
    statement: exp.Expression
    table: exp.Table  # the table it changes


@dataclass(frozen=True)
class SparkCall:
    """``CALL [catalog.]system.procedure(args)``: one of Iceberg's stored procedures
    (expire_snapshots, remove_orphan_files, rewrite_data_files, rollback_to_snapshot, ...), which
    only Spark runs. Its arguments are Spark SQL and go to Spark as written."""

    catalog: str | None  # None: the default catalog
    procedure: str
    text: str  # the statement as Spark runs it (no trailing ';')


Write = FileWrite | TableWrite | SparkWrite


def parse_call(text: str) -> SparkCall | None:
    """The CALL statement ``text`` is, or None if it is not one. sqlglot keeps CALL as opaque
    text, so it is read here; a procedure not under ``system`` is refused (Iceberg's are)."""
    m = _CALL.match(text)
    if m is None:
        if re.match(_LEAD + r"CALL\b", text, re.IGNORECASE):
            raise NotSupportedError("this CALL statement; write CALL catalog.system.procedure(name => value, ...)")
        return None
    parts = [p.strip() for p in m.group("name").split(".")]
    if len(parts) not in (2, 3) or parts[-2].lower() != "system":
        raise NotSupportedError(f"CALL {m.group('name')}: only Iceberg's procedures run, named "
                                "catalog.system.procedure (or system.procedure in the default catalog)")
    catalog = parts[0] if len(parts) == 3 else None
    body = text[m.start("name"):m.end("args") + 1]
    return SparkCall(catalog, parts[-1].lower(), "CALL " + body)


def classify(stmt: exp.Expression) -> Write:
    if isinstance(stmt, exp.Copy):
        return _copy(stmt)
    if isinstance(stmt, exp.Create):
        return _create(stmt)
    if isinstance(stmt, exp.Insert):
        return _insert(stmt)
    if isinstance(stmt, (exp.Merge, exp.Update, exp.Delete)):
        table = stmt.this
        if not isinstance(table, exp.Table) or isinstance(table.this, exp.Func) or _is_path(table):
            raise NotSupportedError(f"{stmt.key.upper()} of {stmt.this.sql('duckdb')}: only Iceberg tables change")
        if stmt.args.get("returning"):
            raise NotSupportedError(f"{stmt.key.upper()} ... RETURNING")
        return SparkWrite(stmt.key.lower(), stmt, table)
    raise NotSupportedError(f"{stmt.key.upper()} statements")


def _rows(query: exp.Expression) -> exp.Expression:
    """A statement's source rows as a query: VALUES and bare table names become SELECTs."""
    if isinstance(query, exp.Subquery):
        query = query.this
    if isinstance(query, exp.Values):
        return exp.select("*").from_(exp.Subquery(this=query, alias=exp.TableAlias(this=exp.to_identifier("_values"))))
    if isinstance(query, exp.Table):
        return exp.select("*").from_(query)
    if not isinstance(query, exp.Query):
        raise NotSupportedError(f"writing the rows of {query.key.upper()}")
    return query


def _copy(stmt: exp.Copy) -> FileWrite:
    if stmt.args.get("kind"):  # COPY t FROM 'file'
        raise NotSupportedError("COPY ... FROM (use INSERT INTO t SELECT * FROM 'file.parquet')")
    files = stmt.args.get("files") or []
    if len(files) != 1 or not isinstance(files[0], exp.Literal) or not files[0].is_string:
        raise NotSupportedError("COPY to anything but one quoted path")
    path = files[0].this
    params: dict[str, exp.Expression | None] = {}
    for p in stmt.args.get("params") or []:
        params[p.this.name.upper()] = p.args.get("expression")
    unknown = set(params) - PASSED - HANDLED
    if unknown:
        raise NotSupportedError(f"COPY option {', '.join(sorted(unknown))}; supported: "
                                f"{', '.join(sorted(PASSED | HANDLED))}")
    for name in ("USE_TMP_FILE", "FILENAME_PATTERN", "FILE_EXTENSION"):
        params.pop(name, None)  # every task writes its own file under a name Puffin gives it
    fmt = _format(params.pop("FORMAT", None), path)
    parts = params.pop("PARTITION_BY", None)
    partition_by = tuple(c.name for c in _items(parts)) if parts is not None else ()
    overwrite = any(_truthy(params.pop(k)) for k in ("OVERWRITE", "OVERWRITE_OR_IGNORE") if k in params)
    per_thread = _truthy(params.pop("PER_THREAD_OUTPUT")) if "PER_THREAD_OUTPUT" in params else False
    options = tuple((k, "true" if v is None else v.sql("duckdb")) for k, v in params.items())
    single = not partition_by and not per_thread and not path.endswith("/")
    return FileWrite(_rows(stmt.this), path, fmt, partition_by, overwrite, options, single)


def _items(e: exp.Expression) -> list[exp.Expression]:
    while isinstance(e, exp.Paren):
        e = e.this
    return list(e.expressions) if isinstance(e, exp.Tuple) else [e]


def _truthy(value: exp.Expression | None) -> bool:
    """An option given bare (``OVERWRITE``) or with a value (``OVERWRITE true``)."""
    if isinstance(value, exp.Boolean):
        return bool(value.this)
    return value is None or value.name.lower() not in ("false", "0", "off")


def _format(value: exp.Expression | None, path: str) -> str:
    if value is not None:
        fmt = value.name.lower()
    else:
        fmt = FILE_FORMATS.get(os.path.splitext(path.rstrip("/"))[1].lower(), "parquet" if path.endswith("/") else "")
        if not fmt:
            raise PuffinError(f"cannot tell the file format of {path!r}: add (FORMAT parquet|csv|json)")
    if fmt not in EXTENSIONS:
        raise NotSupportedError(f"COPY ... (FORMAT {fmt}); formats: {', '.join(EXTENSIONS)}")
    return fmt


def _is_path(table: exp.Table) -> bool:
    name = table.name
    return bool(table.this.args.get("quoted")) and not table.args.get("db") and (
        "/" in name or name.startswith("s3://") or os.path.splitext(name)[1].lower() in FILE_FORMATS)


def _create(stmt: exp.Create) -> Write:
    kind = str(stmt.args.get("kind") or "").upper()
    if kind != "TABLE":
        raise NotSupportedError(f"CREATE {kind}")
    target = stmt.this
    schema = None
    if isinstance(target, exp.Schema):
        schema, target = target, target.this
    if not isinstance(target, exp.Table):
        raise NotSupportedError(f"CREATE TABLE {target.sql('duckdb')}")
    query = stmt.args.get("expression")
    if _is_path(target):
        if query is None:
            raise NotSupportedError("CREATE TABLE on a path without AS SELECT")
        path = target.name
        return FileWrite(_rows(query), path, _format(None, path), overwrite=bool(stmt.args.get("replace")),
                         single=not path.endswith("/"))
    props = stmt.args.get("properties")
    if stmt.args.get("replace") or (props is not None and props.expressions):
        # CREATE OR REPLACE (an overwrite), or partitioning / table properties: Spark's DDL
        return SparkWrite("create or replace" if stmt.args.get("replace") else "create", stmt, target)
    if query is None and schema is None:
        raise NotSupportedError("CREATE TABLE without columns or AS SELECT")
    return TableWrite("ctas" if query is not None else "create", target, _rows(query) if query is not None else None,
                      if_not_exists=bool(stmt.args.get("exists")), schema=schema)


def _insert(stmt: exp.Insert) -> Write:
    target = stmt.this
    columns: tuple[str, ...] = ()
    if isinstance(target, exp.Schema):
        columns = tuple(c.name for c in target.expressions)
        target = target.this
    if not isinstance(target, exp.Table) or isinstance(target.this, exp.Func):
        raise NotSupportedError(f"INSERT INTO {target.sql('duckdb')}: only Iceberg tables take inserts")
    for key in ("conflict", "returning", "where", "partition"):
        if stmt.args.get(key):
            raise NotSupportedError(f"INSERT ... {key.upper().replace('CONFLICT', 'ON CONFLICT')}")
    if stmt.args.get("overwrite"):
        return SparkWrite("insert overwrite", stmt, target)
    if stmt.args.get("alternative"):  # INSERT OR REPLACE / OR IGNORE
        raise NotSupportedError(f"INSERT OR {str(stmt.args['alternative']).upper()}")
    return TableWrite("insert", target, _rows(stmt.expression), columns, by_name=bool(stmt.args.get("by_name")))
