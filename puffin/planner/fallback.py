"""The correct fallback: a statement the distributed planner cannot split runs whole in DuckDB.

DuckDB answers anything it parses (it decorrelates every subquery, knows every clause), so
instead of refusing, the planner reads the statement's tables (in parallel where they are
large) and gathers them into one task that runs the user's statement as written. EXPLAIN names
the fallback and why it happened; nothing of the statement is dropped or approximated.
"""

from __future__ import annotations

import dataclasses

from sqlglot import exp

from puffin.planner.bind import uses_columns
from puffin.planner.logical import Native, Scan
from puffin.sources import Source


def _all_columns_needed(stmt: exp.Expression) -> bool:
    """Whether columns can be referenced without being named (``*``, COLUMNS(...), NATURAL, PIVOT
    grouping by every column it does not name)."""
    if stmt.find(exp.Star, exp.Pivot) is not None or uses_columns(stmt):
        return True
    return any(j.args.get("method") or (j.kind or "").upper() == "NATURAL" for j in stmt.find_all(exp.Join))


def whole_plan(stmt: exp.Expression, used: dict[str, Source], width: int, why: str) -> Native:
    """A query run whole by one DuckDB task because there is nothing to gain from splitting it
    (``why``: small inputs, or a cluster of one node)."""
    return dataclasses.replace(fallback_plan(stmt, used, why, width), fallback=False)


def fallback_plan(stmt: exp.Expression, used: dict[str, Source], reason: str, width: int) -> Native:
    """``stmt`` (tables already resolved to the names in ``used``) as one Native node.

    Each table is scanned for the columns the statement can reference: those whose names occur
    in it as identifiers (a safe over-estimate), or all of them when a star can reach them.
    """
    every = _all_columns_needed(stmt)
    named = {i.name.lower() for i in stmt.find_all(exp.Identifier)}
    tables, inputs, columns = [], [], []
    for name, src in sorted(used.items()):
        cols = tuple(c for c in src.schema.names if every or c.lower() in named)
        if not cols:  # count(*) and the like still need the rows
            cols = tuple(src.schema.names[:1])
        tables.append(name)
        inputs.append(Scan(src, name, cols))
        columns.append(cols)
    return Native(stmt, tuple(tables), tuple(inputs), tuple(columns),
                  tuple(f"c{i}" for i in range(width)), reason)
