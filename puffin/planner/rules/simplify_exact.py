"""sqlglot's ``simplify`` without folding number arithmetic.

Folding ``2147483647 + 1`` on the driver computes it with Python's unbounded integers, where
DuckDB (INTEGER + INTEGER) raises an overflow error, and changes the literal's type. Arithmetic
on number literals is left to DuckDB, which folds it itself with its own semantics; every other
simplification (boolean logic, comparisons, date arithmetic) runs as in sqlglot.

sqlglot tries every pair of a connector's operands (``x > 1 AND x > 3`` -> ``x > 3``): an
N-way OR of equalities cost N^2/2 tries per pass, 40 s at N=2000. A chain of more than
``PAIRWISE_MAX`` operands is therefore simplified operand by operand and kept as a balanced
chain (rules/balance.py), and a condition alternating AND and OR more than ``NESTING_MAX``
levels deep (sqlglot re-renders every level to sort operands: size x depth) leaves the
expression it is in as written.
A simplification is skipped, never changed, and DuckDB's own optimizer still sees the whole
predicate.

sqlglot's optimizer is compiled (PyPI ``sqlglotc``, 2.5x faster planning), and a compiled class
cannot be subclassed from Python, so what ``simplify`` must not touch is hidden from it instead:
each number literal under arithmetic, and each long chain (simplified on its own), is swapped for
an opaque placeholder call before ``simplify`` runs and swapped back after (linear walks). sqlglot's ``pushdown_predicates`` simplifies each condition it
pushes with its module-level ``simplify``; that name points at the same wrapper, or it folded
``x + 0 = 2147483647 + 1`` into ``= 2147483648`` where DuckDB raises an overflow.
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.optimizer import pushdown_predicates as _pushdown_predicates
from sqlglot.optimizer.simplify import simplify

from puffin.planner.rules.balance import balanced

ARITHMETIC = (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.IntDiv, exp.Mod, exp.Pow)
PLACEHOLDER = "__puffin_keep"
PAIRWISE_MAX = 64
NESTING_MAX = 32  # AND/OR alternations; a condition nested deeper is left as written


def _placeholder(hidden: list[exp.Expression], node: exp.Expression) -> exp.Expression:
    hidden.append(node)
    return exp.Anonymous(this=PLACEHOLDER, expressions=[exp.Literal.number(len(hidden) - 1)])


def _hide(expression: exp.Expression, hidden: list[exp.Expression], simplify_part) -> exp.Expression:
    """Swap long chains (each simplified operand by operand) and the number literals under
    arithmetic for placeholder calls; returns the root (itself swapped when it is a long chain)."""
    stack = [expression]
    while stack:
        node = stack.pop()
        if isinstance(node, exp.Connector) and type(node.parent) is not type(node):
            ops = list(node.flatten(unnest=False))
            if len(ops) > PAIRWISE_MAX:
                swapped = _placeholder(hidden, balanced(type(node), [simplify_part(op) for op in ops]))
                if node is expression:
                    return swapped
                node.replace(swapped)
                continue  # its operands are done
        if isinstance(node, ARITHMETIC):
            for key in ("this", "expression"):
                operand = node.args.get(key)
                if operand is not None and _number(operand):
                    node.set(key, _placeholder(hidden, operand))
        stack.extend(node.iter_expressions())
    return expression


def _nesting(expression: exp.Expression) -> int:
    """How many alternations of AND/OR the deepest condition in ``expression`` nests (a chain of
    one connector counts once)."""
    deepest, stack = 0, [(expression, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, exp.Connector) and type(node.parent) is not type(node):
            depth += 1
            deepest = max(deepest, depth)
        stack.extend((child, depth) for child in node.iter_expressions())
    return deepest


def _number(e: exp.Expression) -> bool:
    """A number literal, possibly negated, parenthesised or cast (``CAST(1 AS INTEGER)``)."""
    while isinstance(e, (exp.Cast, exp.Paren)):
        e = e.this
    return isinstance(e, (exp.Literal, exp.Neg)) and e.is_number


def _restore(expression: exp.Expression, hidden: list[exp.Expression]) -> exp.Expression:
    if not hidden:
        return expression
    for node in list(expression.find_all(exp.Anonymous)):
        if node.name == PLACEHOLDER:
            original = hidden[int(node.expressions[0].this)]
            if node is expression:
                return original
            node.replace(original)
    return expression


def simplify_exact(expression: exp.Expression, dialect=None, constant_propagation: bool = False,
                   coalesce_simplification: bool = False) -> exp.Expression:
    def part(e: exp.Expression) -> exp.Expression:
        return simplify_exact(e, dialect, constant_propagation, coalesce_simplification)

    if _nesting(expression) > NESTING_MAX:
        return expression  # sqlglot's operand sort re-renders every level: size x depth
    hidden: list[exp.Expression] = []
    expression = _hide(expression, hidden, part)
    return _restore(simplify(expression, constant_propagation=constant_propagation,
                             coalesce_simplification=coalesce_simplification, dialect=dialect), hidden)


def _pushdown_simplify(expression: exp.Expression, constant_propagation: bool = False,
                       coalesce_simplification: bool = False, dialect=None) -> exp.Expression:
    return simplify_exact(expression, dialect, constant_propagation, coalesce_simplification)


_pushdown_predicates.simplify = _pushdown_simplify
