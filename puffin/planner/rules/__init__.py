"""Logical rewrite rules, each a pure function Plan -> Plan, applied in ``RULES`` order.

The rules that work on the SQL text itself (constant folding, subquery decorrelation,
qualification) run earlier, in ``puffin.planner.bind``, through sqlglot's optimizer.
"""

from __future__ import annotations

from puffin.planner.logical import Plan
from puffin.planner.rules.prune_columns import prune_columns
from puffin.planner.rules.pushdown_filters import pushdown_filters
from puffin.planner.rules.reorder_joins import reorder_joins
from puffin.planner.rules.semijoin_reduction import semijoin_reduction

RULES = (pushdown_filters, reorder_joins, pushdown_filters, semijoin_reduction, prune_columns)


def apply_rules(plan: Plan) -> Plan:
    for rule in RULES:
        before = plan.schema
        plan = rule(plan)
        if plan.schema != before:
            from puffin.errors import InternalError

            raise InternalError(f"rule {rule.__name__} changed the output schema")
    return plan
