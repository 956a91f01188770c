"""Splitting SQL text into statements at the semicolons outside strings, identifiers and comments."""

from __future__ import annotations

import re

_DOLLAR = re.compile(r"\$([A-Za-z_][A-Za-z_0-9]*)?\$")


def split(text: str) -> tuple[list[str], str]:
    """The complete statements of ``text`` (each ended by ``;``, without it) and the rest, which
    is incomplete or blank. Statements of nothing but comments and whitespace are dropped.
    Knows '...' and "..." (doubled quotes inside), -- and /* */ comments, $$ and $tag$ strings."""
    statements: list[str] = []
    start, i, n = 0, 0, len(text)
    while i < n:
        c = text[i]
        if c in ("'", '"'):
            i = _after_quoted(text, i, c)
            if i < 0:
                break
            continue
        if text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
            continue
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                break
            i = end + 2
            continue
        if c == "$":
            m = _DOLLAR.match(text, i)
            if m is not None and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
                end = text.find(m.group(0), m.end())
                if end < 0:
                    break
                i = end + len(m.group(0))
                continue
        if c == ";":
            stmt = text[start:i].strip()
            if not is_blank(stmt):
                statements.append(stmt)
            start = i + 1
        i += 1
    return statements, text[start:]


def _after_quoted(text: str, i: int, quote: str) -> int:
    """The index after the string or identifier opened at ``i``; -1 when it is not closed."""
    j = i + 1
    while True:
        end = text.find(quote, j)
        if end < 0:
            return -1
        if text.startswith(quote * 2, end):
            j = end + 2
            continue
        return end + 1


def is_blank(text: str, open_comment: bool = True) -> bool:
    """Whether ``text`` holds nothing but whitespace and comments (and, unless ``open_comment`` is
    False, a last /* comment not closed yet)."""
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0 and not open_comment:
                return False
            i = n if end < 0 else end + 2
        else:
            return False
    return True


def split_all(text: str) -> list[str]:
    """Every statement of ``text``; a last one without its ``;`` counts too."""
    statements, rest = split(text)
    if not is_blank(rest):
        statements.append(rest.strip())
    return statements
