"""The one place where names and values become SQL text, quoted as DuckDB reads them (by
sqlglot, never by hand): every generated statement goes through ``ident`` and ``literal``."""

from __future__ import annotations

from typing import Any

from sqlglot import exp


def ident(name: str) -> str:
    """A quoted identifier: quotes, spaces, unicode, reserved words and case all survive."""
    return exp.to_identifier(name, quoted=True).sql(dialect="duckdb")


def literal(value: Any) -> str:
    """A SQL literal for a Python value (str, int, float, bool, None)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, float)):
        return exp.Literal.number(value).sql(dialect="duckdb")
    return exp.Literal.string(str(value)).sql(dialect="duckdb")
