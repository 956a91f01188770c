"""Pushed scan filters (sqlglot conjuncts) translated for readers that can skip data.

pyiceberg prunes files and partitions, pyarrow prunes row groups; both get the part of the
filter they can evaluate and DuckDB still applies the whole filter afterwards, so a translation
only has to be *implied by* the filter, never stronger. Under NOT that flips: there only exact
translations are used.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlglot import exp

_COMPARE = {exp.EQ: "eq", exp.NEQ: "ne", exp.LT: "lt", exp.LTE: "le", exp.GT: "gt", exp.GTE: "ge"}
_FLIP = {exp.LT: exp.GT, exp.GT: exp.LT, exp.LTE: exp.GTE, exp.GTE: exp.LTE, exp.EQ: exp.EQ, exp.NEQ: exp.NEQ}


@dataclass(frozen=True)
class Backend:
    compare: Callable[[str, str, Any], Any]  # (op, column, value)
    and_: Callable[[Any, Any], Any]
    or_: Callable[[Any, Any], Any]
    not_: Callable[[Any], Any]
    is_null: Callable[[str], Any]
    in_: Callable[[str, list], Any]
    everything: Callable[[], Any]


def value(e: exp.Expression):
    """The Python value of a literal (dates and timestamps as datetime objects), else None."""
    if isinstance(e, exp.Paren):
        return value(e.this)
    if isinstance(e, exp.Literal):
        return e.this if e.is_string else (float(e.this) if "." in e.this or "e" in e.this.lower() else int(e.this))
    if isinstance(e, exp.Boolean):
        return e.this
    if isinstance(e, exp.Neg):
        v = value(e.this)
        return -v if isinstance(v, (int, float)) else None
    if isinstance(e, exp.Cast) and isinstance(e.this, exp.Literal) and e.this.is_string:
        to = e.to.this.name if hasattr(e.to.this, "name") else str(e.to.this)
        text = e.this.this
        try:
            if to == "DATE":
                return datetime.date.fromisoformat(text)
            if "TIMESTAMP" in to or "DATETIME" in to:
                return datetime.datetime.fromisoformat(text)
        except ValueError:
            return None
        return text if to in ("VARCHAR", "TEXT", "CHAR") else None
    return None


def translate(filters, columns: dict[str, str], b: Backend):
    """``columns`` maps the scan's internal column names to the source's own."""

    def column(e):
        if isinstance(e, exp.Column) and not e.table:
            return columns.get(e.name)
        return None

    def convert(e) -> tuple[Any, bool]:
        """(translation or None, whether it is exact)."""
        e = e.unnest()
        if isinstance(e, exp.And):
            (x, xe), (y, ye) = convert(e.this), convert(e.expression)
            if x is not None and y is not None:
                return b.and_(x, y), xe and ye
            return (x if x is not None else y), False
        if isinstance(e, exp.Or):
            (x, xe), (y, ye) = convert(e.this), convert(e.expression)
            return (b.or_(x, y), xe and ye) if x is not None and y is not None else (None, False)
        if isinstance(e, exp.Not):
            inner, exact = convert(e.this)
            return (b.not_(inner), True) if inner is not None and exact else (None, False)
        if isinstance(e, exp.Is) and isinstance(e.expression, exp.Null) and column(e.this):
            return b.is_null(column(e.this)), True
        if isinstance(e, exp.In) and column(e.this) and not e.args.get("query"):
            values = [value(v) for v in e.expressions]
            ok = all(v is not None for v in values)
            return (b.in_(column(e.this), values), True) if ok else (None, False)
        if isinstance(e, exp.Between) and column(e.this):
            lo, hi = value(e.args["low"]), value(e.args["high"])
            if lo is None or hi is None:
                return None, False
            name = column(e.this)
            return b.and_(b.compare("ge", name, lo), b.compare("le", name, hi)), True
        kind = type(e)
        if kind in _COMPARE:
            left, right = e.this, e.expression
            if column(right) and not column(left):
                left, right, kind = right, left, _FLIP[kind]
            name, v = column(left), value(right)
            if name is not None and v is not None:
                return b.compare(_COMPARE[kind], name, v), True
        return None, False

    out = None
    for f in filters:
        c, _ = convert(f)
        if c is not None:
            out = c if out is None else b.and_(out, c)
    return out if out is not None else b.everything()


def _iso(v):
    return v.isoformat() if isinstance(v, (datetime.date, datetime.datetime)) else v


def iceberg_backend() -> Backend:
    from pyiceberg import expressions as ie

    ops = {"eq": ie.EqualTo, "ne": ie.NotEqualTo, "lt": ie.LessThan, "le": ie.LessThanOrEqual,
           "gt": ie.GreaterThan, "ge": ie.GreaterThanOrEqual}
    return Backend(lambda op, c, v: ops[op](c, _iso(v)), ie.And, ie.Or, ie.Not, ie.IsNull,
                   lambda c, vs: ie.In(c, [_iso(v) for v in vs]), ie.AlwaysTrue)


def arrow_backend() -> Backend:
    import operator

    import pyarrow.compute as pc

    ops = {"eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le,
           "gt": operator.gt, "ge": operator.ge}
    return Backend(lambda op, c, v: ops[op](pc.field(c), v), operator.and_, operator.or_, operator.invert,
                   lambda c: pc.field(c).is_null(), lambda c, vs: pc.field(c).isin(vs), lambda: None)
