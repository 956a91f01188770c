"""DuckDB's errors, as the user's PuffinErrors.

DuckDB checks every query (``bind``) against empty tables of the same schemas; what it rejects
is translated here into ``BindError`` (with the valid names), ``TypeCheckError`` or
``NotSupportedError``, without DuckDB's or Puffin's internals in the text.
"""

from __future__ import annotations

import re

import duckdb

from puffin.errors import BindError, NotSupportedError, TypeCheckError
from puffin.sources import Source


def translate_duckdb_error(e: duckdb.Error, sql: str, used: dict[str, Source]) -> Exception:
    text = str(e)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    first = re.sub(r"^\w+ Error: ", "", lines[0]) if lines else text
    m = re.search(r'Referenced column "(.+?)" not found', text) or re.search(
        r'does not have a column named "(.+?)"', text)
    if m:
        valid = []
        for name, src in used.items():
            alias = name if not name.startswith("__src_") else src.name
            valid += [f"{alias}.{c}" if len(used) > 1 else c for c in src.schema.names]
        where = _locate(sql, m.group(1))
        return BindError(f'Column "{m.group(1)}" not found{where}. Valid columns: {", ".join(valid[:60])}')
    if isinstance(e, duckdb.ConversionException) or "No function matches" in text or "Cannot compare" in text:
        hint = next((ln.strip() for ln in lines[1:] if "explicit type casts" in ln), "")
        return TypeCheckError(f"{first} {hint}".strip())
    if isinstance(e, duckdb.NotImplementedException):
        return NotSupportedError(first)
    if isinstance(e, duckdb.ParserException):
        return NotSupportedError(f"DuckDB cannot run this construct: {first}")
    detail = [ln for ln in lines[1:] if not ln.startswith("LINE ") and ln.strip() != "^"][:3]
    return BindError(" ".join([first] + [d.strip() for d in detail if not set(d.strip()) <= {"^"}]))


def _locate(sql: str, name: str) -> str:
    m = re.search(r"\b" + re.escape(name) + r"\b", sql, re.IGNORECASE)
    if not m:
        return ""
    line = sql.count("\n", 0, m.start()) + 1
    col = m.start() - (sql.rfind("\n", 0, m.start()) + 1) + 1
    return f" (line {line}, column {col})"
