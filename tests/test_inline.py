"""Embedded mode: a plan of one small task runs right in the calling process, so small queries
answer in milliseconds, without a task round trip and without waiting for Ray to start.
Each case runs in a fresh interpreter (Ray is process-global and the other tests start it)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = r"""
import sys, pyarrow as pa, duckdb, puffin
t = pa.table({"g": [1, 1, 2, None], "a": [5, 3, 2, 4], "s": ["x", "y", "z", "w"]})
con = puffin.connect()
con.register("t", t)
oracle = duckdb.connect(); oracle.register("t", t)
for sql in ["SELECT 42 AS x", "SELECT g, sum(a) AS s FROM t GROUP BY g ORDER BY g",
            "SELECT g, a, row_number() OVER (PARTITION BY g ORDER BY a) AS rn FROM t QUALIFY rn = 1 ORDER BY g"]:
    got, want = con.sql(sql).arrow(), oracle.sql(sql).to_arrow_table()
    assert got.equals(want), (sql, got, want)
assert "ray" not in sys.modules, "a one-task plan over a small table started Ray"
assert "ran in this process" in str(con.sql("EXPLAIN ANALYZE SELECT count(*) FROM t"))
try:
    con.sql("SELECT CAST(s AS INTEGER) FROM t")
    raise SystemExit("no error")
except puffin.ExecutionError as e:
    assert "Conversion Error" in str(e), e
big = puffin.connect(target_partitions=2, config={"broadcast_bytes": 0, "replicate_bytes": 0})
big.register("t", t)
sql = "SELECT a.g, count(*) AS n FROM t a JOIN t b ON a.g = b.g GROUP BY a.g ORDER BY a.g"
assert big.sql(sql).arrow().equals(oracle.sql(sql).to_arrow_table())
assert "ray" in sys.modules  # two tasks: the local Ray started
assert con.sql("SELECT 42 AS x").fetchall() == [(42,)]
assert "ran in this process" in str(con.sql("EXPLAIN ANALYZE SELECT count(*) FROM t"))  # small: still here
assert "ran in this process" not in str(big.sql("EXPLAIN ANALYZE " + sql))
print("ok")
"""


def test_first_small_queries_run_in_process_then_ray_takes_over():
    done = subprocess.run([sys.executable, "-c", SCRIPT], check=False, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
