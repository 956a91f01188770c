"""Check all 22 TPC-H queries against DuckDB on the same Parquet files, at any scale factor.

    .venv/bin/python scripts/tpch_check.py --sf 1 [--partitions 8] [--queries 1,5,9]

Data comes from tpchgen-cli (cached under data/tpch-sf<SF>/). Prints one line per query with
both engines' times and exits non-zero if any answer differs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import duckdb

import puffin
from puffin.demo import TABLES, generate_tpch, register_tpch
from puffin.testing import assert_same_result, has_order_by
from puffin.tpch import QUERIES_DIR

DEFAULT_QUERIES = QUERIES_DIR  # shipped with the package


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sf", type=float, default=1.0)
    ap.add_argument("--partitions", type=int, default=None)
    ap.add_argument("--queries", default=",".join(str(i) for i in range(1, 23)))
    ap.add_argument("--queries-dir", default=DEFAULT_QUERIES)
    ap.add_argument("--data", default=None)
    args = ap.parse_args()
    data = args.data or os.path.join("data", f"tpch-sf{args.sf:g}")
    print(f"data: {data} (generating if missing)", flush=True)
    generate_tpch(data, args.sf)
    con = puffin.connect(target_partitions=args.partitions)
    register_tpch(con, data)
    ddb = duckdb.connect()
    for t in TABLES:
        ddb.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{data}/{t}/*.parquet')")
    failures = 0
    total_p = total_d = 0.0
    for q in [int(x) for x in args.queries.split(",")]:
        with open(os.path.join(args.queries_dir, f"q{q:02d}.sql")) as f:
            sql = f.read()
        t0 = time.perf_counter()
        try:
            got = con.sql(sql).arrow()
        except puffin.PuffinError as e:
            print(f"q{q:02d} ERROR {type(e).__name__}: {e}", flush=True)
            failures += 1
            continue
        tp = time.perf_counter() - t0
        t0 = time.perf_counter()
        want = ddb.sql(sql).to_arrow_table()
        td = time.perf_counter() - t0
        total_p, total_d = total_p + tp, total_d + td
        try:
            assert_same_result(got, want, ordered=has_order_by(sql), label=f"q{q:02d}")
            status = "ok"
        except AssertionError as e:
            status, failures = f"WRONG: {str(e)[:300]}", failures + 1
        print(f"q{q:02d} puffin {tp:7.3f}s  duckdb {td:7.3f}s  {status}", flush=True)
    print(f"total  puffin {total_p:7.3f}s  duckdb {total_d:7.3f}s  ({failures} failing)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
