"""The SQL feature corpus (features.sql) against DuckDB, on several partition counts."""

from __future__ import annotations

import datetime
import os
from decimal import Decimal

import duckdb
import pyarrow as pa
import pytest

import puffin
from puffin.testing import assert_same_result, has_order_by

HERE = os.path.dirname(__file__)


def _statements() -> list[str]:
    with open(os.path.join(HERE, "features.sql")) as f:
        text = "\n".join(ln for ln in f.read().splitlines() if not ln.startswith("--"))
    return [s.strip() for s in text.split(";") if s.strip()]


def _tables() -> dict[str, pa.Table]:
    d = datetime.date
    titles = ["eng", "mgr", "eng", "intern", "eng", "sales", "mgr", "eng", "sales", "intern", "eng", "eng"]
    emp = pa.table({
        "id": list(range(1, 13)),
        "name": ["ada", "bob", "cyd", "dee", "eve", "fay", "gus", "hal", "ivy", "jan", "kai", "lea"],
        "dept_id": [1, 1, 2, 2, 3, None, 1, 2, 3, 4, None, 1],
        "title": titles,
        "salary": [90000, 120000, 75000, 30000, 82000, 56000, 99000, 64000, 51000, 28000, 70000, 88000],
        "bonus": [1000.5, None, 250.0, None, 800.0, 0.0, None, 50.25, 10.0, None, 300.0, 75.5],
        "hired": [d(2019, 3, 1), d(2015, 6, 12), d(2021, 1, 4), d(2023, 7, 1), d(2020, 2, 29), d(2018, 11, 30),
                  d(2016, 5, 5), d(2022, 9, 9), d(2019, 12, 31), d(2024, 1, 15), d(2017, 8, 8), d(2021, 6, 6)],
    })
    dept = pa.table({"id": [1, 2, 3, 5], "dname": ["research", "ops", "sales", "empty"],
                     "budget": [2_000_000, 500_000, 1_200_000, 10]})
    sales = pa.table({
        "emp_id": [1, 1, 3, 5, 5, 5, 9, 9, 13, 6],
        "amount": [120.0, 30.0, 75.5, 300.0, 20.0, 99.0, 10.0, 200.0, 55.0, 101.0],
        "sold": [d(2024, 1, 3), d(2024, 1, 20), d(2024, 2, 2), d(2024, 2, 14), d(2024, 3, 1),
                 d(2024, 3, 9), d(2024, 3, 30), d(2024, 4, 1), d(2024, 4, 2), d(2024, 4, 3)],
    })
    nums = pa.table({"k": [i % 13 for i in range(3000)], "v": list(range(3000))})
    # exact numbers: decimals whose float sums would be off, 32-bit integers, a NULL account
    ledger = pa.table({
        "acct": pa.array([None if i % 9 == 8 else i % 4 for i in range(40)], pa.int32()),
        "amount": pa.array([(Decimal(f"{(i * 7919) % 100003}{i % 10}.{(i * 37) % 100:02d}") + 1234567890123)
                            * (1 if i % 5 else -1) for i in range(40)], pa.decimal128(15, 2)),
        "rate": pa.array([Decimal(f"0.{(i * 104729) % 10**10:010d}") for i in range(40)], pa.decimal128(38, 10)),
        "qty": pa.array([(i * 31) % 17 - 3 for i in range(40)], pa.int32()),
    })
    return {"emp": emp, "dept": dept, "sales": sales, "nums": nums, "ledger": ledger}


@pytest.fixture(scope="module")
def oracle():
    con = duckdb.connect()
    for name, t in _tables().items():
        con.register(name, t)
    return con


@pytest.fixture(scope="module", params=[1, 4], ids=["p1", "p4"])
def con(request, local_ray):
    n = request.param
    # with several partitions: no broadcast, no replicated scans, every ORDER BY range-partitioned
    forced = {"broadcast_bytes": 0, "replicate_bytes": 0, "range_sort_rows": 0}
    c = puffin.connect(target_partitions=n, config=forced if n > 1 else None)
    for name, t in _tables().items():
        # split in-memory tables so scans have several units
        c.register(name, t)
    return c


STATEMENTS = _statements()


@pytest.mark.parametrize("sql", STATEMENTS, ids=[f"s{i:02d}" for i in range(len(STATEMENTS))])
def test_statement_matches_duckdb(con, oracle, sql):
    want = oracle.sql(sql).to_arrow_table()
    got = con.sql(sql, timeout=120).arrow()
    assert_same_result(got, want, ordered=has_order_by(sql), label=sql, sql=sql)
