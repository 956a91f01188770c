"""The main job on embedded defaults: make a small TPC-H dataset, run a query distributed.

    python -m puffin.demo [--sf 0.1] [--partitions 4] [--dir data/tpch-sf0.1]

Generates TPC-H Parquet with ``tpchgen-cli`` (once; lineitem and orders in several files),
starts a local Ray, runs TPC-H Q5 through Puffin and prints the result and the distributed plan.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

TABLES = ("lineitem", "orders", "customer", "part", "partsupp", "supplier", "nation", "region")
SPLIT_TABLES = ("lineitem", "orders")

Q5 = """
SELECT n_name, sum(l_extendedprice * (1 - l_discount)) AS revenue
FROM customer, orders, lineitem, supplier, nation, region
WHERE c_custkey = o_custkey AND l_orderkey = o_orderkey AND l_suppkey = s_suppkey
  AND c_nationkey = s_nationkey AND s_nationkey = n_nationkey AND n_regionkey = r_regionkey
  AND r_name = 'ASIA' AND o_orderdate >= DATE '1994-01-01' AND o_orderdate < DATE '1995-01-01'
GROUP BY n_name
ORDER BY revenue DESC
"""


def _tpchgen() -> str:
    exe = shutil.which("tpchgen-cli") or os.path.join(os.path.dirname(sys.executable), "tpchgen-cli")
    if not os.path.exists(exe):
        from puffin.errors import PuffinError

        raise PuffinError("tpchgen-cli is not installed: pip install 'puffindb[dev]' (or tpchgen-cli)")
    return exe


def generate_tpch(directory: str, sf: float, parts: int = 4, row_group_bytes: str | None = "4MB") -> str:
    """TPC-H Parquet under ``directory/<table>/`` (lineitem and orders in ``parts`` files).

    Reuses a finished directory (``_SUCCESS``); generation goes to a temporary sibling renamed
    into place, so an interrupted run never leaves a half-made dataset behind.
    """
    if os.path.exists(os.path.join(directory, "_SUCCESS")):
        return directory
    parent, name = os.path.split(os.path.abspath(directory))
    tmp = os.path.join(parent, f".{name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(tmp)
    gen = [_tpchgen(), "parquet", "-s", f"{sf:g}"]
    if row_group_bytes:
        gen.append(f"--row-group-bytes={row_group_bytes}")
    split = [arg for t in SPLIT_TABLES for arg in ("-T", t)]
    single = [arg for t in TABLES if t not in SPLIT_TABLES for arg in ("-T", t)]
    subprocess.run([*gen, *split, "--parts", str(parts), "-o", tmp], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*gen, *single, "-o", tmp], check=True, stdout=subprocess.DEVNULL)
    for t in TABLES:  # single-file tables come out as <table>.parquet: give each a directory
        flat = os.path.join(tmp, f"{t}.parquet")
        if os.path.exists(flat):
            os.makedirs(os.path.join(tmp, t))
            os.rename(flat, os.path.join(tmp, t, f"{t}.parquet"))
    with open(os.path.join(tmp, "_SUCCESS"), "w") as f:
        f.write(f"tpchgen-cli sf={sf:g} parts={parts}\n")
    os.rename(tmp, directory)
    return directory


def register_tpch(con, directory: str) -> None:
    for t in TABLES:
        con.register(t, os.path.join(directory, t))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sf", type=float, default=0.1)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args(argv)
    directory = args.dir or os.path.join("data", f"tpch-sf{args.sf:g}")

    import puffin

    print(f"generating TPC-H SF{args.sf:g} Parquet in {directory} ...", flush=True)
    generate_tpch(directory, args.sf)
    print("starting Puffin on a local Ray ...", flush=True)
    con = puffin.connect(target_partitions=args.partitions)
    register_tpch(con, directory)
    start = time.perf_counter()
    result = con.sql(Q5)
    elapsed = time.perf_counter() - start
    print(f"\nTPC-H Q5 ({elapsed:.2f}s, {args.partitions} partitions):")
    result.show()
    print("\nEXPLAIN ANALYZE (stages, exchanges, what each did):")
    print(con.sql("EXPLAIN ANALYZE " + Q5))


if __name__ == "__main__":
    main()
