"""Resolve names and types, then let sqlglot's optimizer normalise the query.

1. File references (``FROM 'x/*.parquet'``, ``read_parquet(...)``, ``read_csv``, ``read_json``)
   become sources of their own; every other table name must be registered.
2. DuckDB checks the query against empty tables of the same schemas: unknown columns, type
   mismatches and unknown functions are caught here, before any task runs, and reported as
   ``BindError`` / ``TypeCheckError`` with the valid names.
3. sqlglot's optimizer qualifies every column, decorrelates subqueries into joins, pushes
   predicates, folds constants and simplifies (rules run in sqlglot's RULES order).
"""

from __future__ import annotations

import difflib
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import pyarrow as pa
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer import RULES as SQLGLOT_RULES
from sqlglot.optimizer import optimize
from sqlglot.optimizer.pushdown_predicates import pushdown_predicates
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.simplify import simplify

from puffin import signals
from puffin.errors import BindError, NotSupportedError
from puffin.planner.diagnose import translate_duckdb_error
from puffin.planner.rules.balance import balance_connectors
from puffin.planner.rules.decorrelate import alias_subquery_projections, decorrelate
from puffin.planner.rules.exists_to_semijoin import exists_to_semijoin
from puffin.planner.rules.simplify_exact import simplify_exact
from puffin.planner.types import arrow_schema
from puffin.sources import Source

# sqlglot's rules, with correlated EXISTS turned into semi/anti joins once columns are qualified
AST_RULES = (alias_subquery_projections, qualify, exists_to_semijoin, decorrelate) + tuple(r for r in SQLGLOT_RULES if r is not qualify)
# ... with number arithmetic left to DuckDB (rules/simplify_exact.py)
AST_RULES = tuple(simplify_exact if r is simplify else r for r in AST_RULES)
# ... with long AND/OR chains kept balanced (rules/balance.py): at the start, and after the
# passes that rebuild connectors left-deep (sqlglot's simplify inside pushdown_predicates, simplify)
AST_RULES = (balance_connectors,) + tuple(
    x for r in AST_RULES for x in ((r, balance_connectors) if r in (pushdown_predicates, simplify_exact) else (r,)))
FileResolver = Callable[[str | list[str], str | None, dict], Source]
READERS = {"read_parquet": "parquet", "parquet_scan": "parquet", "read_csv": "csv",
           "read_csv_auto": "csv", "read_json": "json", "read_json_auto": "json",
           "read_ndjson": "json", "read_ndjson_auto": "json"}


def _literal(node: exp.Expression):
    if isinstance(node, exp.Boolean):
        return node.this
    if isinstance(node, exp.Literal):
        return node.this if node.is_string else float(node.this) if "." in node.this else int(node.this)
    raise NotSupportedError(f"table function argument {node.sql('duckdb')} (use a literal)")


def uses_columns(stmt: exp.Expression) -> bool:
    """Whether the statement has DuckDB's COLUMNS(...) star expressions (sqlglot cannot expand
    them, so it cannot know which columns they name)."""
    return stmt.find(exp.Columns) is not None or any(
        f.name.upper() == "COLUMNS" for f in stmt.find_all(exp.Anonymous))


def _function_name(func: exp.Func) -> str:
    return (func.name if isinstance(func, exp.Anonymous) else func.sql_name()).lower()


def _reader_call(func: exp.Func) -> tuple[str, list[str], dict]:
    name = _function_name(func)
    kind = READERS.get(name)
    if kind is None:
        raise NotSupportedError(f"table function {name}(...)")
    paths: list[str] = []
    options: dict = {}
    for arg in func.iter_expressions():
        if isinstance(arg, exp.Literal) and arg.is_string and not paths:
            paths = [arg.this]
        elif isinstance(arg, exp.Array):
            paths = [_literal(a) for a in arg.expressions]
        elif isinstance(arg, (exp.EQ, exp.PropertyEQ)):
            options[arg.this.name.lower()] = _literal(arg.expression)
    if not paths:
        raise BindError(f"{name}() needs a path")
    return kind, paths, options


def _default_alias(path: str) -> str:
    stem = os.path.splitext(os.path.basename(path.rstrip("/")))[0]
    stem = re.sub(r"\W", "_", stem)
    return stem if stem and not stem[0].isdigit() and "*" not in path else ""


@dataclass
class Bound:
    """One query's bound state: what the planner needs after the binder has checked it."""

    resolved: exp.Expression  # the statement with its tables resolved to the names in ``used``
    used: dict[str, Source]
    output_names: list[str]  # as DuckDB names the result columns
    output_schema: pa.Schema | None  # and the Arrow types DuckDB returns them as
    schema: dict[str, dict[str, str]]  # table -> column -> DuckDB type, for sqlglot
    unplanned: str = ""  # why sqlglot's optimizer cannot take it (set by ``optimize``)


class Binder:
    """Resolves and checks queries against a connection's tables. It keeps no per-query state
    (each query's is in its ``Bound``), so queries on one connection bind concurrently."""

    def __init__(self, tables: dict[str, Source], resolve_files: FileResolver,
                 resolve_catalog: Callable[[exp.Table], Source] | None = None):
        self.tables = tables  # lower-case name -> Source; file sources are added per query
        self.resolve_files = resolve_files
        self.resolve_catalog = resolve_catalog  # catalog.namespace.table -> Source (Iceberg)
        self.default_namespace: str | None = None  # set: unregistered bare names go to the catalog
        self.table_functions: dict[str, Callable[[], Source]] = {}  # name() -> a table made now
        self._validator = signals.connect()  # each check takes its own cursor
        self._cursor_lock = threading.Lock()  # DuckDB refuses a call on a connection busy with another
        self._types: dict[int, dict[str, str]] = {}

    def check(self, stmt: exp.Expression, original_sql: str, dialect: str = "duckdb") -> Bound:
        """Resolve the tables and let DuckDB bind the query over empty tables of their schemas:
        unknown names and type errors surface here, before anything runs."""
        used: dict[str, Source] = {}
        stmt, swapped = self._resolve_tables(stmt, used)
        # DuckDB names unaliased result columns after the text it was given, so check the
        # user's own text when DuckDB can read it as is.
        as_written = dialect == "duckdb" and not swapped
        names, schema = self._validate(original_sql if as_written else stmt.sql(dialect="duckdb"),
                                       original_sql, used)
        types = {name: self._column_types(src) for name, src in used.items()}
        return Bound(stmt, used, names, schema, types)

    def optimize(self, bound: Bound) -> exp.Expression | None:
        """The statement normalised by sqlglot's optimizer, or None when it cannot take it (the
        planner then runs ``bound.resolved`` whole in DuckDB; ``bound.unplanned`` says why)."""
        if uses_columns(bound.resolved):
            bound.unplanned = "COLUMNS(...) expressions (DuckDB expands them, sqlglot does not)"
            return None
        try:
            return optimize(bound.resolved, schema=bound.schema, dialect="duckdb", rules=AST_RULES)
        except SqlglotError as e:
            bound.unplanned = f"sqlglot's optimizer: {str(e).splitlines()[0][:200]}"
        except (AssertionError, KeyError, ValueError, TypeError, AttributeError, IndexError, RecursionError) as e:
            bound.unplanned = f"sqlglot's optimizer failed ({type(e).__name__})"
        return None

    def bind(self, stmt: exp.Expression, original_sql: str, dialect: str = "duckdb") -> exp.Expression | None:
        """Check, then optimize (tests look at the optimized statement)."""
        return self.optimize(self.check(stmt, original_sql, dialect))

    # -- tables ------------------------------------------------------------------------------
    def _resolve_tables(self, stmt: exp.Expression, used: dict[str, Source]) -> tuple[exp.Expression, bool]:
        """A copy of ``stmt`` with file and catalog references replaced by sources (added to
        ``used``), and whether any was replaced."""
        stmt = stmt.copy()
        swapped = False
        ctes = {c.alias_or_name.lower() for c in stmt.find_all(exp.CTE)}
        for table in list(stmt.find_all(exp.Table)):
            alias = table.alias
            if isinstance(table.this, exp.Func):
                fn = self.table_functions.get(_function_name(table.this))
                if fn is not None:  # a table of the session's own (puffin_history())
                    swapped = _swap(table, fn(), alias or _function_name(table.this), used)
                    continue
                if _function_name(table.this) not in READERS:
                    continue  # range(), generate_series(), ...: DuckDB computes them in the fallback
                kind, paths, options = _reader_call(table.this)
                src = self.resolve_files(paths if len(paths) > 1 else paths[0], kind, options)
                swapped = _swap(table, src, alias or _default_alias(paths[0]), used)
                continue
            name = table.name
            if table.args.get("db"):
                if self.resolve_catalog is None:
                    raise BindError(f"unknown table {table.sql('duckdb')}: no catalogs are configured")
                src = self.resolve_catalog(table)
                swapped = _swap(table, src, alias or name.split("$")[0], used)
                continue
            if table.args.get("version") is not None or table.args.get("when") is not None:
                raise NotSupportedError(f"time travel on '{name}': only Iceberg tables have snapshots")
            if name.lower() in ctes:
                continue
            if name.lower() in self.tables:
                used[name.lower()] = self.tables[name.lower()]
                continue
            if table.this.quoted and re.search(r"[/.*]", name):
                src = self.resolve_files(name, None, {})
                swapped = _swap(table, src, alias or _default_alias(name), used)
                continue
            if self.default_namespace and self.resolve_catalog is not None:
                swapped = _swap(table, self.resolve_catalog(table), alias or name.split("$")[0], used)
                continue
            known = sorted(self.tables)
            close = difflib.get_close_matches(name.lower(), known, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise BindError(
                f"Table '{name}' does not exist.{hint} "
                f"Known tables: {', '.join(known) if known else '(none registered)'}"
            )
        return stmt, swapped

    def _column_types(self, src: Source) -> dict[str, str]:
        if src.source_id not in self._types:
            cur = self._cursor()
            try:
                cur.register("__describe", src.schema.empty_table())
                rows = cur.execute("DESCRIBE __describe").fetchall()
            finally:
                cur.close()
            self._types[src.source_id] = {r[0]: r[1] for r in rows}
        return self._types[src.source_id]

    # -- DuckDB as the type checker ----------------------------------------------------------
    def _cursor(self) -> duckdb.DuckDBPyConnection:
        with self._cursor_lock:
            return self._validator.cursor()

    def _validate(self, sql: str, original_sql: str, used: dict[str, Source]) -> tuple[list[str], pa.Schema]:
        """The result's column names and Arrow types, as DuckDB binds ``sql`` (no rows read)."""
        cur = self._cursor()  # registrations are the cursor's own: queries do not meet
        try:
            for name, src in used.items():
                cur.register(name, src.schema.empty_table())
            rel = cur.sql(sql.strip().rstrip(";"))
            return list(rel.columns), arrow_schema(cur, rel)
        except duckdb.Error as e:
            raise translate_duckdb_error(e, original_sql, used) from None
        finally:
            cur.close()


def _swap(table: exp.Table, src: Source, alias: str, used: dict[str, Source]) -> bool:
    """Replace a file or catalog reference by its source's name (a quoted ``__src_<id>``)."""
    name = f"__src_{src.source_id}"
    used[name] = src
    new = exp.Table(this=exp.to_identifier(name, quoted=True))
    if alias:
        new.set("alias", exp.TableAlias(this=exp.to_identifier(alias)))
    table.replace(new)
    return True
