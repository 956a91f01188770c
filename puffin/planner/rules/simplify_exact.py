"""sqlglot's ``simplify`` without folding number arithmetic.

Folding ``2147483647 + 1`` on the driver computes it with Python's unbounded integers, where
DuckDB (INTEGER + INTEGER) raises an overflow error, and changes the literal's type. Arithmetic
on number literals is left to DuckDB, which folds it itself with its own semantics; every other
simplification (boolean logic, comparisons, date arithmetic) runs as in sqlglot.
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.optimizer.simplify import Simplifier

ARITHMETIC = (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.IntDiv, exp.Mod, exp.Pow)


class _ExactSimplifier(Simplifier):
    def _simplify_binary(self, expression, a, b):
        if isinstance(expression, ARITHMETIC) and a.is_number and b.is_number:
            return None
        return super()._simplify_binary(expression, a, b)


def simplify_exact(expression: exp.Expression, dialect=None) -> exp.Expression:
    return _ExactSimplifier(dialect=dialect).simplify(expression)
