"""SQL text -> stages of fragments, in one direction:

parse (``parse``) -> bind + sqlglot rewrites (``bind``) -> logical plan (``builder``) ->
rules (``rules``) -> stages at exchanges (``physical``) -> fragments (``fragments``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
from sqlglot import exp

from puffin.errors import InternalError, NotSupportedError
from puffin.planner.bind import Binder
from puffin.planner.builder import PlanBuilder
from puffin.planner.fallback import fallback_plan
from puffin.planner.logical import Native, Plan
from puffin.planner.parse import parse
from puffin.planner.physical import PhysicalPlanner, Settings, Stage
from puffin.planner.rules import apply_rules
from puffin.sources import Source


@dataclass
class QueryPlan:
    logical: Plan
    stages: list[Stage]
    names: list[str] | None  # None: the result names its own columns (PIVOT)
    planning_ms: float


def plan_query(
    sql: str, dialect: str, binder: Binder, settings_for: Callable[[dict[str, Source]], Settings]
) -> QueryPlan:
    """Plan ``sql``; ``settings_for`` picks partition counts once the tables read are known.

    What the distributed planner cannot split (sqlglot cannot optimize it, the builder does not
    know a construct) runs whole in one DuckDB task instead (``fallback``), never refused."""
    start = time.perf_counter()
    bound = binder.bind(parse(sql, dialect), sql, dialect)
    width = len(binder.output_names)
    settings = settings_for(binder.used)
    try:
        if bound is None:
            raise NotSupportedError(binder.unplanned)
        logical, names = PlanBuilder(binder.used).build(bound)
        logical = apply_rules(logical)
        stages = PhysicalPlanner(settings).plan(logical)
    except (NotSupportedError, InternalError) as e:
        logical, names = fallback_plan(binder.resolved, binder.used, str(e), width), binder.output_names
        stages = PhysicalPlanner(settings).plan(logical)
    if width == len(names):
        names = binder.output_names
    if isinstance(logical, Native) and logical.statement.find(exp.Pivot):
        # PIVOT's columns are the pivoted values: known only once it has run
        stages[-1] = dataclasses.replace(stages[-1], schema=None)
        names = None
    else:
        stages[-1] = dataclasses.replace(stages[-1], schema=_result_schema(stages[-1], binder.output_schema))
    return QueryPlan(logical, stages, names, (time.perf_counter() - start) * 1000)


def _result_schema(last: Stage, duckdb_schema: pa.Schema | None) -> pa.Schema:
    """The final stage returns the types DuckDB returns for the whole query."""
    if duckdb_schema is None or len(duckdb_schema) != len(last.schema):
        return last.schema
    return pa.schema([f.with_type(t) for f, t in zip(last.schema, duckdb_schema.types)])


__all__ = ["Binder", "QueryPlan", "Settings", "plan_query"]
