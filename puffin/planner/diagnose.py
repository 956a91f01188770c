"""DuckDB's errors, as the user's PuffinErrors.

DuckDB checks every query (``bind``) against empty tables of the same schemas; what it rejects
is translated here into ``BindError`` (with the valid names), ``TypeCheckError`` or
``NotSupportedError``, without DuckDB's or Puffin's internals in the text: the names Puffin gives
file references (``__src_N``) become the files' own, DuckDB's catalog prefixes are dropped, and
advice that only a DuckDB user can follow (``SET ...``) is left out.
"""

from __future__ import annotations

import re

import duckdb

from puffin.errors import BindError, NotSupportedError, TypeCheckError
from puffin.sources import Source

SOURCE_NAME = re.compile(r"__src_(\d+)")
CATALOG_PREFIX = re.compile(r'"?(?:temp|memory)"?\."?main"?\.(?=["\w])')
SET_ADVICE = re.compile(r"\s*\b(?:Use|Try|Consider|Run)\b[^.]*\bSET\b[^.]*(?:\.|$)")
DEPTH_LIMIT = re.compile(r"Max expression depth limit of (\d+) exceeded")


def translate_duckdb_error(e: duckdb.Error, sql: str, used: dict[str, Source]) -> Exception:
    text = _scrub(str(e), used)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    first = re.sub(r"^[\w ]*Error: ", "", lines[0]) if lines else text
    m = re.search(r'Referenced column "(.+?)" not found', text) or re.search(
        r'does not have a column named "(.+?)"', text)
    if m:
        valid = []
        for name, src in used.items():
            alias = name if not name.startswith("__src_") else src.name
            valid += [f"{alias}.{c}" if len(used) > 1 else c for c in src.schema.names]
        where = _locate(sql, m.group(1))
        return BindError(f'Column "{m.group(1)}" not found{where}. Valid columns: {", ".join(valid[:60])}')
    depth = DEPTH_LIMIT.search(text)
    if depth:
        return NotSupportedError(f"expression nested too deeply: at most {depth.group(1)} levels "
                                 "of nested expressions and subqueries are checked")
    if isinstance(e, duckdb.ConversionException) or "No function matches" in text or "Cannot compare" in text:
        hint = next((ln.strip() for ln in lines[1:] if "explicit type casts" in ln), "")
        return TypeCheckError(f"{first} {hint}".strip())
    if isinstance(e, duckdb.NotImplementedException):
        return NotSupportedError(first)
    if isinstance(e, duckdb.ParserException):
        return NotSupportedError(f"DuckDB cannot run this construct: {first}")
    detail = [ln for ln in lines[1:] if not ln.startswith("LINE ") and ln.strip() != "^"][:3]
    return BindError(" ".join([first] + [d.strip() for d in detail if not set(d.strip()) <= {"^"}]))


def _scrub(text: str, used: dict[str, Source]) -> str:
    """DuckDB's message without Puffin's and DuckDB's internal names and DuckDB-only advice."""
    names = {name[len("__src_"):]: src.name for name, src in used.items() if name.startswith("__src_")}
    if "__src_" in text:
        text = SOURCE_NAME.sub(lambda m: names.get(m.group(1), "the file reference"), text)
        lines = text.split("\n")
        at = next((i for i, ln in enumerate(lines) if ln.startswith("LINE ")), len(lines))
        while at > 1 and not lines[at - 1].strip():
            at -= 1
        lines[at - 1] += " (give the file reference an alias to name it)"
        text = "\n".join(lines)
    text = CATALOG_PREFIX.sub("", text)
    return SET_ADVICE.sub("", text)


def _locate(sql: str, name: str) -> str:
    m = re.search(r"\b" + re.escape(name) + r"\b", sql, re.IGNORECASE)
    if not m:
        return ""
    line = sql.count("\n", 0, m.start()) + 1
    col = m.start() - (sql.rfind("\n", 0, m.start()) + 1) + 1
    return f" (line {line}, column {col})"
