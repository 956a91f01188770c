"""SQL text -> stages of fragments, in one direction:

parse (``parse``) -> bind + sqlglot rewrites (``bind``) -> logical plan (``builder``) ->
rules (``rules``) -> stages at exchanges (``physical``) -> fragments (``fragments``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
from sqlglot import exp

from puffin.errors import InternalError, NotSupportedError
from puffin.planner.bind import Binder, Bound
from puffin.planner.builder import PlanBuilder
from puffin.planner.fallback import fallback_plan, whole_plan
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
    used: dict[str, Source]  # the sources it reads, by the names its scans use


def plan_query(
    sql: str, dialect: str, binder: Binder, settings_for: Callable[[dict[str, Source]], Settings],
    gather: bool = True,
) -> QueryPlan:
    """Plan ``sql``; ``settings_for`` picks partition counts once the tables read are known.

    A query whose inputs are all small runs whole in one DuckDB task (``whole``): there is
    nothing to split, so sqlglot's optimizer and the distributed planner are skipped. What the
    distributed planner cannot split (sqlglot cannot optimize it, the builder does not know a
    construct) runs whole in one DuckDB task too (``fallback``), never refused. ``gather=False``
    (a write) leaves the last stage's output in its tasks: each writes its own share."""
    start = time.perf_counter()
    bound = binder.check(parse(sql, dialect), sql, dialect)
    width = len(bound.output_names)
    settings = settings_for(bound.used)
    whole = _one_task(settings, bound)
    if whole:
        logical: Plan = whole_plan(bound.resolved, bound.used, width, whole)
        names = bound.output_names
        # one task reads every file itself, with all its threads: no scan is split off
        stages = PhysicalPlanner(dataclasses.replace(settings, bytes_per_scan_task=math.inf)).plan(logical, gather)
    else:
        try:
            stmt = binder.optimize(bound)
            if stmt is None:
                raise NotSupportedError(bound.unplanned)
            logical, names = PlanBuilder(bound.used).build(stmt)
            logical = apply_rules(logical)
            stages = PhysicalPlanner(settings).plan(logical, gather)
        except (NotSupportedError, InternalError) as e:
            logical, names = fallback_plan(bound.resolved, bound.used, str(e), width), bound.output_names
            stages = PhysicalPlanner(settings).plan(logical, gather)
    if width == len(names):
        names = bound.output_names
    if isinstance(logical, Native) and logical.statement.find(exp.Pivot):
        # PIVOT's columns are the pivoted values: known only once it has run
        stages[-1] = dataclasses.replace(stages[-1], schema=None)
        names = None
    else:
        stages[-1] = dataclasses.replace(stages[-1], schema=_result_schema(stages[-1], bound.output_schema))
    return QueryPlan(logical, stages, names, (time.perf_counter() - start) * 1000, bound.used)


def _one_task(settings: Settings, bound: Bound) -> str:
    """Why the whole query is one DuckDB task, or "" when it is planned distributed.

    Partitions not set by the user, and every input small: under ``bytes_per_scan_task`` (one
    scan task would read it anyway), or a local file or in-memory table under
    ``one_task_bytes`` (no limit on a one-node cluster). Object-store and Iceberg inputs over
    the first bound stay distributed: their scans prune files and row groups with the
    query's filters, which the whole statement's reader does not."""
    if settings.fixed:
        return ""
    small = all(src.bytes <= settings.bytes_per_scan_task for src in bound.used.values())
    if small:
        return "small inputs"
    local = all(src.bytes <= settings.bytes_per_scan_task or (src.storage is None and src.iceberg is None)
                for src in bound.used.values())
    if local and all(src.bytes <= settings.one_task_bytes for src in bound.used.values()):
        return "inputs fit one node" if math.isinf(settings.one_task_bytes) else "inputs under one_task_bytes"
    return ""


def _result_schema(last: Stage, duckdb_schema: pa.Schema | None) -> pa.Schema:
    """The final stage returns the types DuckDB returns for the whole query."""
    if duckdb_schema is None or len(duckdb_schema) != len(last.schema):
        return last.schema
    return pa.schema([f.with_type(t) for f, t in zip(last.schema, duckdb_schema.types)])


__all__ = ["Binder", "QueryPlan", "Settings", "plan_query"]
