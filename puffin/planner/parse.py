"""SQL text -> sqlglot AST, with syntax errors that point at the line and column.

In the DuckDB dialect (the default) DuckDB's own parser reads the text first, so what DuckDB
would reject is rejected here too, at the line and column the user typed (sqlglot is more
lenient: it reads ``a > > 3`` as ``a >> 3`` and ``SELECT`` alone as a query). It only parses (no
tables are needed) and costs about a tenth of sqlglot's parse. sqlglot then builds the AST the
planner works on; its own errors (other dialects) are reworded without its internals.

Deeply nested expressions are parsed again in a thread with a large stack when sqlglot's
recursive parser runs out of Python stack (``retry_deep``, usable by the later planning steps
too); past that, the error says the query nests too deeply.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import duckdb
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, SqlglotError, TokenError

from puffin import signals
from puffin.errors import InternalError, NotSupportedError, PuffinError, SqlSyntaxError

EXPLAIN = re.compile(r"^\s*EXPLAIN(\s+ANALYZE)?\s+", re.IGNORECASE)
SYSTEM_VERSION = re.compile(r"(?<=\bFOR)(\s+)SYSTEM_VERSION(?=\s+AS\s+OF\b)", re.IGNORECASE)  # SQL:2011
# Time travel as sqlglot reads it (FOR VERSION/TIMESTAMP AS OF <literal>); DuckDB spells it
# AT (VERSION => ...), so these clauses are blanked out before DuckDB checks the text.
TIME_TRAVEL = re.compile(r"\bFOR\s+(?:VERSION|TIMESTAMP|SYSTEM_TIME)\s+AS\s+OF\s+", re.IGNORECASE)
TIME_TRAVEL_VALUE = re.compile(r"(?:(?:TIMESTAMP|TIMESTAMPTZ|DATE)\s*)?'(?:[^']|'')*'|[-+]?\d+(?:\.\d*)?",
                               re.IGNORECASE)
TOKEN_REPR = re.compile(r"<Token token_type: TokenType\.(\w+), text: (.*?), line: \d+, col: \d+.*?>")
REQUIRED = re.compile(r"Required keyword: '\w+' missing for <class '(?:[\w.]*\.)?(\w+)'>")
CLASS_REPR = re.compile(r"<class '(?:[\w.]*\.)?(\w+)'>")
DEPTH_LIMIT = re.compile(r"Max expression depth limit of (\d+) exceeded")
CARET_WINDOW = 100  # longer lines are shown around the error only
DEEP_STACK_BYTES = 256 << 20  # the thread that parses very deep nesting (virtual; touched pages only)
DEEP_RECURSION_LIMIT = 60_000  # ~35 Python frames per nesting level in sqlglot's parser
TOO_DEEP = ("expression nested too deeply for the planner; "
            "flatten the nested parentheses, function calls, CASEs or subqueries")
# what sqlglot's "Required keyword ... missing for <class X>" is about, in SQL words
CONSTRUCTS = {
    "Where": "WHERE clause", "Having": "HAVING clause", "Qualify": "QUALIFY clause",
    "Limit": "LIMIT clause", "Offset": "OFFSET clause", "Group": "GROUP BY clause",
    "Order": "ORDER BY clause", "From": "FROM clause", "Join": "JOIN", "With": "WITH clause",
    "Add": "'+' expression", "Sub": "'-' expression", "Mul": "'*' expression", "Div": "'/' expression",
    "Mod": "'%' expression", "EQ": "'=' comparison", "NEQ": "'<>' comparison", "GT": "'>' comparison",
    "GTE": "'>=' comparison", "LT": "'<' comparison", "LTE": "'<=' comparison", "And": "AND",
    "Or": "OR", "Not": "NOT", "DPipe": "'||' expression", "Neg": "'-' expression",
}

_duck_lock = threading.Lock()
_duck: duckdb.DuckDBPyConnection | None = None
_limit_lock = threading.Lock()
_limit_users = 0
_limit_saved = 0


# -- the entry points ---------------------------------------------------------------------------
def split_explain(sql: str) -> tuple[str, str | None]:
    """('SELECT ...', None | 'explain' | 'analyze'). The EXPLAIN prefix is blanked, not cut, so
    lines and columns in later errors are still those of the text the user typed."""
    _check_text(sql)
    m = EXPLAIN.match(sql)
    if not m:
        return sql, None
    return _blank(sql[:m.end()]) + sql[m.end():], "analyze" if m.group(1) else "explain"


INSERT_OVERWRITE = re.compile(r"^(?:\s+|--[^\n]*\n|/\*.*?\*/)*INSERT\s+OVERWRITE\b", re.IGNORECASE | re.DOTALL)
WRITES = (exp.Copy, exp.Create, exp.Insert, exp.Merge, exp.Update, exp.Delete)  # puffin.writes runs these


def parse(sql: str, dialect: str = "duckdb") -> exp.Expression:
    """One query (SELECT, set operations, PIVOT); a write statement is refused here."""
    stmt = parse_statement(sql, dialect)
    if isinstance(stmt, WRITES):
        raise NotSupportedError(f"{stmt.key.upper()} is a write statement; run it with Connection.sql")
    return stmt


def parse_statement(sql: str, dialect: str = "duckdb") -> exp.Expression:
    """One statement: a query, or a write (COPY, CREATE TABLE, INSERT, MERGE, UPDATE, DELETE)."""
    _check_text(sql)
    # the readers get a rewritten text of the same length; messages quote the user's own
    text = SYSTEM_VERSION.sub(lambda m: m.group(1) + "VERSION       ", sql)
    # INSERT OVERWRITE (Spark's, Hive's) is the one write DuckDB's parser does not know
    duckdb_types = _duckdb_check(text, sql) if dialect == "duckdb" and not INSERT_OVERWRITE.match(text) else None
    statements = [s for s in _sqlglot_parse(text, sql, dialect, duckdb_types) if s is not None]
    if not statements:
        raise SqlSyntaxError("Syntax error: empty query")
    if len(statements) > 1:
        raise NotSupportedError("several statements in one call; send them one at a time")
    stmt = statements[0]
    if not isinstance(stmt, (exp.Query, exp.Pivot, *WRITES)):  # PIVOT / UNPIVOT statements are queries
        kind = stmt.key.upper() if not isinstance(stmt, exp.Command) else str(stmt.this).upper()
        raise NotSupportedError(f"{kind} statements (queries, COPY, CREATE TABLE, INSERT, MERGE, UPDATE "
                                "and DELETE run here)")
    if isinstance(stmt, exp.Select) and not stmt.expressions:
        raise _syntax_error(sql, _end(sql), 1, "SELECT clause without selection list")
    return stmt


def _check_text(sql: Any) -> None:
    if not isinstance(sql, str):
        raise SqlSyntaxError(f"query must be a string, got {type(sql).__name__}")


# -- DuckDB's parser as the judge of DuckDB SQL -------------------------------------------------
def _duckdb_check(text: str, sql: str) -> list[str] | None:
    """DuckDB's statement types for ``text``, or a SqlSyntaxError where DuckDB's parser rejects it
    (quoting ``sql``, the user's text). None when the text uses a spelling only sqlglot reads
    (time travel to a non-literal)."""
    masked = _mask_time_travel(text)
    if masked is None:
        return None
    try:
        with _duck_lock:
            statements = _duckdb().extract_statements(masked)
    except (duckdb.ParserException, duckdb.SyntaxException) as e:
        raise _from_duckdb(e, sql, masked) from None
    except duckdb.Error:
        return None  # not a syntax error; sqlglot and the binder will say what is wrong
    return [s.type.name for s in statements]


def _duckdb() -> duckdb.DuckDBPyConnection:
    global _duck
    if _duck is None:
        _duck = signals.connect()
    return _duck


def _mask_time_travel(sql: str) -> str | None:
    if not TIME_TRAVEL.search(sql):
        return sql
    out, pos = [], 0
    for m in TIME_TRAVEL.finditer(sql):
        value = TIME_TRAVEL_VALUE.match(sql, m.end())
        if value is None:
            return None
        out += [sql[pos:m.start()], _blank(sql[m.start():value.end()])]
        pos = value.end()
    return "".join(out) + sql[pos:]


def _from_duckdb(e: duckdb.Error, sql: str, masked: str) -> PuffinError:
    text = str(e)
    first = text.splitlines()[0] if text else ""
    message = re.sub(r"^[\w ]*Error: ", "", first).strip() or "syntax error"
    depth = DEPTH_LIMIT.search(message)
    if depth:
        return NotSupportedError(f"expression nested too deeply: at most {depth.group(1)} levels "
                                 "of nested expressions are read")
    pos = _duckdb_position(masked, text)
    if pos is None:
        pos = _end(sql)
    near = re.search(r'at or near "(.+)"$', message)
    width = len(near.group(1)) if near and sql.startswith(near.group(1), pos) else 1
    return _syntax_error(sql, pos, width, message)


def _duckdb_position(masked: str, text: str) -> int | None:
    """The character offset DuckDB's parser stopped at: from json_serialize_sql (a byte offset),
    else from the ``LINE n:`` excerpt and caret of its message."""
    try:
        with _duck_lock:
            row = _duckdb().execute("SELECT json_serialize_sql(?)", [masked]).fetchone()
        info = json.loads(row[0]) if row and row[0] else {}
        if "position" in info:
            return len(masked.encode("utf-8")[: int(info["position"])].decode("utf-8", "ignore"))
    except (duckdb.Error, ValueError, TypeError):
        pass
    m = re.search(r"^(LINE (\d+): )(.*)\n( *)\^", text, re.MULTILINE)
    if not m:
        return None
    line, excerpt = int(m.group(2)), m.group(3)
    offset = len(m.group(4)) - len(m.group(1))
    lines = masked.split("\n")
    if not 1 <= line <= len(lines):
        return None
    if excerpt.startswith("..."):
        core = excerpt[3:].removesuffix("...")
        found = lines[line - 1].find(core)
        offset = (max(found, 0)) + offset - 3
    return sum(len(ln) + 1 for ln in lines[: line - 1]) + max(offset, 0)


# -- sqlglot ----------------------------------------------------------------------------------
def _sqlglot_parse(text: str, sql: str, dialect: str, duckdb_types: list[str] | None) -> list:
    """sqlglot's statements for ``text``; errors quote ``sql``, the user's text (same length)."""
    if dialect is not None and dialect != "duckdb":
        try:
            sqlglot.Dialect.get_or_raise(dialect)
        except ValueError as e:
            hint = re.search(r"Did you mean .*", str(e))
            raise NotSupportedError(f"unknown SQL dialect {dialect!r}{'. ' + hint.group(0) if hint else ''}"
                                    ) from None
    try:
        return retry_deep(lambda: sqlglot.parse(text, read=dialect))
    except ParseError as e:
        raise _from_sqlglot(e, sql, duckdb_types) from None
    except TokenError as e:
        raise _from_tokenizer(e, sql, duckdb_types) from None
    except SqlglotError as e:
        raise _reject(sql, _end(sql), 1, _reword(str(e)), duckdb_types) from None
    except PuffinError:
        raise
    except Exception as e:
        raise InternalError(f"the SQL reader failed on this query ({type(e).__name__}); "
                            "please report it with the query") from e


def _from_sqlglot(e: ParseError, sql: str, duckdb_types: list[str] | None) -> PuffinError:
    err = e.errors[0] if e.errors else {}
    line, col = err.get("line") or 1, err.get("col") or 1
    highlight = err.get("highlight") or " "
    desc = _reword(err.get("description") or str(e))
    pos = _offset(sql, line, max(col - len(highlight) + 1, 1))
    return _reject(sql, pos, len(highlight), desc, duckdb_types)


def _from_tokenizer(e: TokenError, sql: str, duckdb_types: list[str] | None) -> PuffinError:
    pos = _unterminated(sql)
    if pos is not None:
        return _reject(sql, pos, 1, "unterminated quoted string, name or comment", duckdb_types)
    start = getattr(e, "start", None)
    pos = start + 50 if isinstance(start, int) and start > 0 else _end(sql)
    return _reject(sql, min(pos, len(sql)), 1, "cannot read the text here", duckdb_types)


def _reject(sql: str, pos: int, width: int, desc: str, duckdb_types: list[str] | None) -> PuffinError:
    """sqlglot rejects the text. If DuckDB read it, the SQL is fine and Puffin lacks support."""
    if duckdb_types is None:
        return _syntax_error(sql, pos, width, desc)
    if duckdb_types and duckdb_types[0] != "SELECT":
        return NotSupportedError(f"{duckdb_types[0]} statements (only queries run here so far)")
    line, col = _line_col(sql, pos)
    return NotSupportedError(f"this DuckDB syntax is not supported yet (line {line}, column {col}: "
                             f"{desc})\n{_caret(sql, line, col, width)}")


def _reword(desc: str) -> str:
    """sqlglot's messages without its class names and token reprs."""
    desc = TOKEN_REPR.sub(lambda m: "the end of the query" if m.group(1) == "SENTINEL"
                          else f"'{m.group(2)}'", desc)
    desc = REQUIRED.sub(lambda m: f"incomplete {CONSTRUCTS.get(m.group(1), m.group(1).upper())}", desc)
    return CLASS_REPR.sub(lambda m: m.group(1).upper(), desc)


def _unterminated(sql: str) -> int | None:
    """Where an unterminated string, quoted name or block comment starts, if one does."""
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"`":
            j = i + 1
            while True:
                j = sql.find(ch, j)
                if j < 0:
                    return i
                if sql.startswith(ch * 2, j):
                    j += 2
                    continue
                break
            i = j + 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            if j < 0:
                return i
            i = j + 2
        else:
            i += 1
    return None


# -- deep nesting -------------------------------------------------------------------------------
def retry_deep(fn: Callable[[], Any]) -> Any:
    """``fn()``; when it runs out of Python stack (sqlglot walks nested expressions recursively),
    ``fn()`` again in a thread with a large stack; past that, a NotSupportedError saying so."""
    try:
        return fn()
    except RecursionError:
        pass
    try:
        return run_deep(fn)
    except RecursionError:
        raise NotSupportedError(TOO_DEEP) from None


def run_deep(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a thread with a large stack and a raised recursion limit (for the recursive
    walks of sqlglot over deeply nested queries). A RecursionError there still propagates."""
    box: dict[str, Any] = {}

    def target() -> None:
        signals.worker_thread()
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the caller's thread
            box["error"] = e

    with _recursion_limit(DEEP_RECURSION_LIMIT):
        try:
            with _limit_lock:
                old = threading.stack_size(DEEP_STACK_BYTES)
                try:
                    thread = threading.Thread(target=target, name="puffin-deep-parse", daemon=True)
                    thread.start()
                finally:
                    threading.stack_size(old)
        except (RuntimeError, ValueError, MemoryError):
            raise RecursionError("no thread with a large stack") from None
        thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


@contextmanager
def _recursion_limit(limit: int):
    global _limit_users, _limit_saved
    with _limit_lock:
        if _limit_users == 0:
            _limit_saved = sys.getrecursionlimit()
            if _limit_saved < limit:
                sys.setrecursionlimit(limit)
        _limit_users += 1
    try:
        yield
    finally:
        with _limit_lock:
            _limit_users -= 1
            if _limit_users == 0 and sys.getrecursionlimit() == limit and _limit_saved < limit:
                sys.setrecursionlimit(_limit_saved)


# -- positions and carets -----------------------------------------------------------------------
def _blank(text: str) -> str:
    return re.sub(r"[^\n]", " ", text)


def _end(sql: str) -> int:
    """Just after the last token: where a query that stops too early needed more."""
    return len(sql.rstrip().rstrip(";").rstrip())


def _line_col(sql: str, pos: int) -> tuple[int, int]:
    line = sql.count("\n", 0, pos) + 1
    return line, pos - (sql.rfind("\n", 0, pos) + 1) + 1


def _offset(sql: str, line: int, col: int) -> int:
    lines = sql.split("\n")
    line = min(max(line, 1), len(lines))
    return sum(len(ln) + 1 for ln in lines[: line - 1]) + min(col - 1, len(lines[line - 1]))


def _syntax_error(sql: str, pos: int, width: int, desc: str) -> SqlSyntaxError:
    line, col = _line_col(sql, pos)
    return SqlSyntaxError(f"Syntax error at line {line}, column {col}: {desc}\n{_caret(sql, line, col, width)}",
                          line, col)


def _caret(sql: str, line: int, col: int, width: int) -> str:
    """The line (around the column when long) and a caret under ``width`` characters at ``col``."""
    lines = sql.split("\n") or [""]
    text = lines[min(max(line, 1), len(lines)) - 1].replace("\t", " ").rstrip("\r")
    start = col - 1
    if len(text) > CARET_WINDOW:
        lo = max(0, min(start - CARET_WINDOW // 2, len(text) - CARET_WINDOW))
        hi = lo + CARET_WINDOW
        text = ("..." if lo else "") + text[lo:hi] + ("..." if hi < len(text) else "")
        start = start - lo + (3 if lo else 0)
    return f"  {text}\n  {' ' * max(start, 0)}{'^' * max(width, 1)}"
