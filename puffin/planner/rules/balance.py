"""Rebuild long AND / OR chains as balanced trees.

sqlglot parses ``a OR b OR c ...`` into a left-deep binary tree: N operands nest N levels deep.
Every walk up that tree costs O(N) per node (sqlglot's scope collection looks for each column's
enclosing clause with ``find_ancestor``; recursive walks recurse N levels), so an N-way OR
cost O(N^2) in ``qualify`` and deep recursion everywhere. AND and OR are associative: the same
operands as a balanced tree (depth log N) mean the same predicate and print the same text
(``a OR b OR c OR d``). Chains of fewer than ``MIN_OPERANDS`` operands are left as they are.
"""

from __future__ import annotations

from sqlglot import exp

MIN_OPERANDS = 16


def balanced(cls: type[exp.Connector], ops: list[exp.Expression]) -> exp.Expression:
    """``ops`` joined by ``cls`` in a tree of depth log2(len(ops)) (built without recursion)."""
    level = list(ops)
    while len(level) > 1:
        nxt = [cls(this=level[i], expression=level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def balance_connectors(expression: exp.Expression) -> exp.Expression:
    """``expression`` with every chain of at least MIN_OPERANDS ANDs (ORs) balanced, in place."""
    for node in list(expression.walk()):
        if not isinstance(node, (exp.And, exp.Or)) or type(node.parent) is type(node):
            continue  # not the top of a chain (chains below a replaced top are visited as operands)
        ops = list(node.flatten(unnest=False))
        if len(ops) < MIN_OPERANDS:
            continue
        new = balanced(type(node), ops)
        if node is expression:
            expression = new
        else:
            node.replace(new)
    return expression
