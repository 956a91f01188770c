"""Immutable logical plan nodes.

Every node knows its output column names (``schema``) and checks at construction that the
expressions it holds only reference columns its children produce, so a rule that builds a bad
plan fails right there, naming the columns that exist. Expressions are sqlglot expressions over
*internal column names* (``"alias.column"``, quoted, never table-qualified); nodes never mutate
them, rules build new nodes with ``with_children`` / ``dataclasses.replace``.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from sqlglot import exp

from puffin.errors import InternalError
from puffin.sources import Source

NamedExpr = tuple[str, exp.Expression]
BALANCE_FROM = 16  # and_all builds conjunctions of this many parts balanced


def col(name: str) -> exp.Column:
    return exp.Column(this=exp.Identifier(this=name, quoted=True))


def columns_in(e: exp.Expression) -> set[str]:
    """Internal column names an expression reads (lambda parameters excluded)."""
    lambda_args = {a.name for lam in e.find_all(exp.Lambda) for a in lam.expressions}
    return {c.name for c in e.find_all(exp.Column) if c.name not in lambda_args or c.table}


def fresh(name: str, taken) -> str:
    """``name``, or ``name_1``, ``name_2``... whichever the columns in ``taken`` do not use."""
    taken = {t.lower() for t in taken}
    out, k = name, 0
    while out.lower() in taken:
        k += 1
        out = f"{name}_{k}"
    return out


def conjuncts(e: exp.Expression | None) -> list[exp.Expression]:
    """The operands of a (parenthesised, nested) AND chain, left to right; linear, no recursion."""
    out: list[exp.Expression] = []
    stack = [e] if e is not None else []
    while stack:
        node = stack.pop().unnest()
        if isinstance(node, exp.And):
            stack += (node.expression, node.this)
        else:
            out.append(node)
    return out


def and_all(parts: list[exp.Expression]) -> exp.Expression | None:
    if not parts:
        return None
    if len(parts) < BALANCE_FROM:
        return exp.and_(*parts, copy=False)  # parenthesises OR operands
    # long conjunctions as a balanced tree (see rules/balance.py), operands parenthesised alike
    from puffin.planner.rules.balance import balanced

    return balanced(exp.And, [exp.paren(p, copy=False) if isinstance(p, exp.Connector) else p for p in parts])


@dataclass(frozen=True, eq=False)
class Plan(ABC):
    def children(self) -> tuple[Plan, ...]:
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self) if f.name in ("child", "left", "right"))

    def with_children(self, *children: Plan) -> Plan:
        names = [f.name for f in dataclasses.fields(self) if f.name in ("child", "left", "right")]
        return dataclasses.replace(self, **dict(zip(names, children)))

    @property
    @abstractmethod
    def schema(self) -> tuple[str, ...]:
        """Output column names, in order."""

    def _check(self, exprs: list[exp.Expression], available: tuple[str, ...]) -> None:
        avail = set(available)
        for e in exprs:
            missing = columns_in(e) - avail
            if missing:
                raise InternalError(
                    f"{type(self).__name__} references {sorted(missing)} but its input has "
                    f"{list(available)} (this is a bug in a planner rule)"
                )


@dataclass(frozen=True, eq=False)
class Scan(Plan):
    """Read ``columns`` of a source; ``filters`` are conjuncts over the output names."""

    source: Source
    alias: str
    columns: tuple[str, ...]
    filters: tuple[exp.Expression, ...] = ()

    def __post_init__(self) -> None:
        unknown = set(self.columns) - set(self.source.schema.names)
        if unknown:
            raise InternalError(f"scan of {self.source.name} asks for unknown {sorted(unknown)}")
        self._check(list(self.filters), self.schema)

    @property
    def schema(self) -> tuple[str, ...]:
        # sqlglot normalises identifiers to lower case (DuckDB resolves them case-insensitively)
        return tuple(f"{self.alias}.{c.lower()}" for c in self.columns)

    @property
    def column_map(self) -> dict[str, str]:
        """Internal name -> the source's own column name."""
        return dict(zip(self.schema, self.columns))


@dataclass(frozen=True, eq=False)
class Values(Plan):
    """A relation given as a self-contained DuckDB query (VALUES lists, FROM-less SELECTs)."""

    sql: str
    names: tuple[str, ...]

    @property
    def schema(self) -> tuple[str, ...]:
        return self.names


@dataclass(frozen=True, eq=False)
class Exchange(Plan):
    """Leaf standing for the output of another stage (made by the physical planner)."""

    stage_id: int
    mode: str  # hash | broadcast | gather | forward | sample | range
    names: tuple[str, ...]
    keys: tuple[str, ...] = ()
    types: pa.Schema | None = None  # what the stage delivers (``planner.types``)

    @property
    def schema(self) -> tuple[str, ...]:
        return self.names


@dataclass(frozen=True, eq=False)
class Filter(Plan):
    child: Plan
    condition: exp.Expression

    def __post_init__(self) -> None:
        self._check([self.condition], self.child.schema)

    @property
    def schema(self) -> tuple[str, ...]:
        return self.child.schema


@dataclass(frozen=True, eq=False)
class Project(Plan):
    child: Plan
    exprs: tuple[NamedExpr, ...]

    def __post_init__(self) -> None:
        self._check([e for _, e in self.exprs], self.child.schema)
        names = [n for n, _ in self.exprs]
        if len(set(names)) != len(names):
            raise InternalError(f"duplicate output names in projection: {names}")

    @property
    def schema(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.exprs)


JOIN_KINDS = ("inner", "left", "full", "semi", "anti", "cross")


@dataclass(frozen=True, eq=False)
class Join(Plan):
    left: Plan
    right: Plan
    kind: str
    condition: exp.Expression | None = None

    def __post_init__(self) -> None:
        if self.kind not in JOIN_KINDS:
            raise InternalError(f"unknown join kind {self.kind}")
        overlap = set(self.left.schema) & set(self.right.schema)
        if overlap:
            raise InternalError(f"join sides share column names {sorted(overlap)}")
        if self.condition is not None:
            self._check([self.condition], self.left.schema + self.right.schema)

    @property
    def schema(self) -> tuple[str, ...]:
        if self.kind in ("semi", "anti"):
            return self.left.schema
        return self.left.schema + self.right.schema


@dataclass(frozen=True, eq=False)
class Aggregate(Plan):
    """GROUP BY ``keys`` (named expressions) computing ``aggs`` (expressions over aggregates).

    ``phase`` is 'single' from the builder; the physical planner splits decomposable
    aggregates into 'partial' and 'final'.
    """

    child: Plan
    keys: tuple[NamedExpr, ...]
    aggs: tuple[NamedExpr, ...]
    phase: str = "single"

    def __post_init__(self) -> None:
        self._check([e for _, e in self.keys + self.aggs], self.child.schema)

    @property
    def schema(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.keys + self.aggs)


@dataclass(frozen=True, eq=False)
class Window(Plan):
    child: Plan
    windows: tuple[NamedExpr, ...]

    def __post_init__(self) -> None:
        self._check([e for _, e in self.windows], self.child.schema)

    @property
    def schema(self) -> tuple[str, ...]:
        return self.child.schema + tuple(n for n, _ in self.windows)


@dataclass(frozen=True, eq=False)
class Sort(Plan):
    """ORDER BY; ``keys`` are sqlglot ``Ordered`` expressions over the child's columns."""

    child: Plan
    keys: tuple[exp.Ordered, ...]

    def __post_init__(self) -> None:
        self._check(list(self.keys), self.child.schema)

    @property
    def schema(self) -> tuple[str, ...]:
        return self.child.schema


@dataclass(frozen=True, eq=False)
class Limit(Plan):
    child: Plan
    limit: int | None
    offset: int = 0

    @property
    def schema(self) -> tuple[str, ...]:
        return self.child.schema


@dataclass(frozen=True, eq=False)
class SetOp(Plan):
    """UNION / INTERSECT / EXCEPT; the right side's columns are already named as the left's."""

    left: Plan
    right: Plan
    kind: str  # union | intersect | except
    distinct: bool

    def __post_init__(self) -> None:
        if len(self.left.schema) != len(self.right.schema):
            raise InternalError("set operation sides differ in width")

    @property
    def schema(self) -> tuple[str, ...]:
        return self.left.schema


@dataclass(frozen=True, eq=False)
class Native(Plan):
    """A statement the distributed planner does not split, run whole by DuckDB in one task.

    ``statement`` is the user's query (tables resolved) over the names in ``tables``; each is
    bound to the matching plan in ``inputs`` (a scan of that table), whose columns it sees under
    their own names (``columns``). ``reason`` says why the planner fell back (shown in EXPLAIN),
    or, with ``fallback`` False, why one task is the plan of choice (small inputs, one node).
    """

    statement: exp.Expression
    tables: tuple[str, ...]
    inputs: tuple[Plan, ...]
    columns: tuple[tuple[str, ...], ...]
    names: tuple[str, ...]
    reason: str
    fallback: bool = True

    def children(self) -> tuple[Plan, ...]:
        return self.inputs

    def with_children(self, *children: Plan) -> Plan:
        return dataclasses.replace(self, inputs=tuple(children))

    @property
    def schema(self) -> tuple[str, ...]:
        return self.names


def walk(plan: Plan):
    yield plan
    for c in plan.children():
        yield from walk(c)


def transform_up(plan: Plan, fn) -> Plan:
    """Rebuild ``plan`` bottom-up, replacing each node by ``fn(node)``."""
    kids = plan.children()
    if kids:
        new = tuple(transform_up(c, fn) for c in kids)
        if any(a is not b for a, b in zip(new, kids)):
            plan = plan.with_children(*new)
    return fn(plan)


def describe_expr(e: Any) -> str:
    return e.sql(dialect="duckdb") if isinstance(e, exp.Expression) else str(e)
