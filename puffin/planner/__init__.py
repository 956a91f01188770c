"""SQL text -> stages of fragments, in one direction:

parse (``parse``) -> bind + sqlglot rewrites (``bind``) -> logical plan (``builder``) ->
rules (``rules``) -> stages at exchanges (``physical``) -> fragments (``fragments``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from puffin.planner.bind import Binder
from puffin.planner.builder import PlanBuilder
from puffin.planner.logical import Plan
from puffin.planner.parse import parse
from puffin.planner.physical import PhysicalPlanner, Settings, Stage
from puffin.planner.rules import apply_rules
from puffin.sources import Source


@dataclass
class QueryPlan:
    logical: Plan
    stages: list[Stage]
    names: list[str]
    planning_ms: float


def plan_query(
    sql: str, dialect: str, binder: Binder, settings_for: Callable[[dict[str, Source]], Settings]
) -> QueryPlan:
    """Plan ``sql``; ``settings_for`` picks partition counts once the tables read are known."""
    start = time.perf_counter()
    bound = binder.bind(parse(sql, dialect), sql, dialect)
    logical, names = PlanBuilder(binder.used).build(bound)
    logical = apply_rules(logical)
    stages = PhysicalPlanner(settings_for(binder.used)).plan(logical)
    if len(binder.output_names) == len(names):
        names = binder.output_names
    return QueryPlan(logical, stages, names, (time.perf_counter() - start) * 1000)


__all__ = ["Binder", "QueryPlan", "Settings", "plan_query"]
