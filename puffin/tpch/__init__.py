"""The 22 TPC-H queries (DuckDB's SQL text, validation parameters filled in), shipped with the
package so the tests, the demo, ``scripts/tpch_check.py`` and the benchmark harness run from a
clone alone. Source: DuckDB's ``extension/tpch/dbgen/queries/`` (MIT); the query text derives
from the TPC-H specification."""

from __future__ import annotations

import os

QUERIES_DIR = os.path.join(os.path.dirname(__file__), "queries")


def query(n: int) -> str:
    """TPC-H query ``n`` (1-22)."""
    if not 1 <= n <= 22:
        raise ValueError(f"TPC-H has queries 1 to 22, not {n}")
    with open(os.path.join(QUERIES_DIR, f"q{n:02d}.sql")) as f:
        return f.read()
