"""EXPLAIN goldens: the plans the rules and the physical planner produce, kept as files.

EXPLAIN names nothing run-dependent (no ids, no paths), so a change to a rule shows here as a
diff of plans. After an intended change: ``PUFFIN_UPDATE_GOLDEN=1 pytest tests/test_explain_golden.py``
and review the diff of ``tests/golden/``.
"""

from __future__ import annotations

import os

import pytest

from puffin.planner.explain import explain
from tests.conftest import tpch_query
from tests.test_planner import _plan

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
CASES = {
    "tpch_q01_p4": (tpch_query, 1),
    "tpch_q03_p4": (tpch_query, 3),
    "tpch_q05_p4": (tpch_query, 5),
    "tpch_q18_p4": (tpch_query, 18),
    "tpch_q21_p4": (tpch_query, 21),
    "rollup_p4": (None, ("SELECT o_orderstatus, o_orderpriority, count(*) AS n, "
                         "GROUPING(o_orderstatus, o_orderpriority) AS g "
                         "FROM orders GROUP BY ROLLUP (o_orderstatus, o_orderpriority)")),
    "qualify_p4": (None, ("SELECT o_custkey, o_orderkey, o_totalprice FROM orders "
                          "QUALIFY row_number() OVER (PARTITION BY o_custkey ORDER BY o_totalprice DESC) = 1")),
    "fallback_p4": (None, ("SELECT DISTINCT ON (o_custkey) o_custkey, o_orderdate FROM orders "
                           "ORDER BY o_custkey, o_orderdate")),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_explain_matches_golden(tpch_dir, name):
    make, arg = CASES[name]
    sql = make(arg) if make else arg
    text = explain(_plan(tpch_dir, sql, partitions=4).stages) + "\n"
    path = os.path.join(GOLDEN, f"{name}.txt")
    if os.environ.get("PUFFIN_UPDATE_GOLDEN") or not os.path.exists(path):
        with open(path, "w") as f:
            f.write(text)
    with open(path) as f:
        assert text == f.read(), f"plan of {name} changed; if intended, update with PUFFIN_UPDATE_GOLDEN=1"
