"""SQL text -> sqlglot AST, with syntax errors that point at the line and column."""

from __future__ import annotations

import re

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from puffin.errors import NotSupportedError, SqlSyntaxError

EXPLAIN = re.compile(r"^\s*EXPLAIN(\s+ANALYZE)?\s+", re.IGNORECASE)
SYSTEM_VERSION = re.compile(r"\bFOR\s+SYSTEM_VERSION\s+AS\s+OF\b", re.IGNORECASE)  # SQL:2011 spelling


def _caret(sql: str, line: int, col: int, width: int) -> str:
    lines = sql.splitlines() or [""]
    text = lines[min(max(line, 1), len(lines)) - 1]
    start = max(col - width, 0)
    return f"  {text}\n  {' ' * start}{'^' * max(width, 1)}"


def split_explain(sql: str) -> tuple[str, str | None]:
    """('SELECT ...', None | 'explain' | 'analyze')."""
    m = EXPLAIN.match(sql)
    if not m:
        return sql, None
    return sql[m.end():], "analyze" if m.group(1) else "explain"


def parse(sql: str, dialect: str = "duckdb") -> exp.Expression:
    sql = SYSTEM_VERSION.sub("FOR VERSION AS OF", sql)
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except ParseError as e:
        err = e.errors[0] if e.errors else {}
        line, col = err.get("line") or 1, err.get("col") or 1
        width = len(err.get("highlight") or " ")
        start = max(col - width + 1, 1)
        desc = err.get("description") or str(e)
        desc = re.sub(r"<Token token_type: TokenType\.\w+, text: (.*?), line.*?>", r"'\1'", desc)
        raise SqlSyntaxError(
            f"Syntax error at line {line}, column {start}: {desc}\n{_caret(sql, line, col, width)}",
            line,
            start,
        ) from None
    except TokenError as e:
        raise SqlSyntaxError(f"Syntax error: {e}") from None
    except ValueError as e:  # unknown dialect
        raise SqlSyntaxError(f"cannot read dialect {dialect!r}: {e}") from None
    if not statements:
        raise SqlSyntaxError("Syntax error: empty query")
    if len(statements) > 1:
        raise NotSupportedError("several statements in one call; send them one at a time")
    stmt = statements[0]
    if not isinstance(stmt, (exp.Query,)):
        kind = stmt.key.upper() if not isinstance(stmt, exp.Command) else str(stmt.this).upper()
        raise NotSupportedError(f"{kind} statements (only queries run here so far)")
    return stmt
