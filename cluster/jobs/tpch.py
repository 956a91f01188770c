"""Run TPC-H queries on the Ray cluster this job runs in, over the TPC-H tables in --data, and
print each result as DuckDB does, with its time; --out DIR writes qNN.parquet per query.

    ray submit cluster/aws.yaml cluster/jobs/tpch.py -- --data s3://bucket/tpch/sf100 --queries 1,5,9
    ray job submit --address http://127.0.0.1:8265 --working-dir cluster/jobs -- \\
        python tpch.py --data s3://bucket/tpch/sf100 --out s3://bucket/results/sf100

--data is a directory or s3:// prefix with one folder per table (lineitem/, orders/, ...), as
`python -m puffin.demo` and tpchgen-cli make them. The 22 queries ship with Puffin (DuckDB's text,
validation parameters). --check runs each query in DuckDB on this machine too and compares
(small scale factors: DuckDB reads all of the data here). --generate SF makes the data in --data
first, with tpchgen-cli, unless it is there (a local directory only).

Exit status: 0 when every query ran (and matched, with --check), 1 when one failed (each
failure is printed with Puffin's message; the other queries still run), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="tpch.py", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="directory or s3:// prefix with a folder per TPC-H table")
    ap.add_argument("--queries", default="1-22", help="which queries: 1,5,9 or 1-22 (default all)")
    ap.add_argument("--out", metavar="DIR", help="write qNN.parquet per query here (local or s3://)")
    ap.add_argument("--check", action="store_true", help="compare every result with DuckDB's on this machine")
    ap.add_argument("--generate", type=float, metavar="SF", help="make TPC-H data at this scale factor in --data first")
    ap.add_argument("--address", default="auto",
                    help="the Ray cluster (default: auto, the cluster this job runs in; RAY_ADDRESS wins)")
    ap.add_argument("--target-partitions", type=int, default=None, help="partitions per hash exchange")
    ap.add_argument("--max-rows", type=int, default=10, help="rows printed per result (the rest are counted)")
    args = ap.parse_args(argv)
    try:
        args.numbers = query_numbers(args.queries)
    except ValueError as e:
        ap.error(f"--queries {args.queries!r}: {e}")
    return args


def query_numbers(spec: str) -> list[int]:
    numbers: list[int] = []
    for part in spec.replace(" ", "").split(","):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        numbers.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    if not numbers or any(not 1 <= n <= 22 for n in numbers):
        raise ValueError("TPC-H has queries 1 to 22")
    return list(dict.fromkeys(numbers))


def join_cluster(address: str) -> str:
    """Join the cluster as this job's driver (Puffin then runs every query there); a line saying where."""
    from puffin import runtime  # Puffin's one Ray importer

    runtime.join(address)
    return runtime.describe_cluster()


def write_parquet(table, path: str) -> None:
    """``table`` at ``path`` (local or s3://), written beside it first and then moved in one step."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from puffin import storage
    from puffin.cli.output import plain

    table = plain(table)
    if storage.is_s3(path):
        fs = storage.s3_filesystem(storage.S3Config.resolve())
        pq.write_table(table, storage.strip_scheme(path), filesystem=fs)  # an S3 PUT is atomic
        return
    path = os.path.abspath(os.path.expanduser(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tpch-", suffix=".parquet", dir=os.path.dirname(path))
    os.close(fd)
    try:
        pq.write_table(table, tmp, filesystem=pafs.LocalFileSystem())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def duckdb_oracle(data: str):
    """DuckDB over the same files, in this process (for --check)."""
    import duckdb

    from puffin.demo import TABLES

    con = duckdb.connect()
    if data.startswith(("s3://", "s3a://")):
        raise SystemExit("--check reads the data with DuckDB here: give a local --data")
    for t in TABLES:
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{os.path.join(data, t)}/**/*.parquet')")
    return con


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import puffin
    import puffin.tpch
    from puffin.demo import generate_tpch, register_tpch

    try:
        if args.generate:
            print(f"[tpch] generating TPC-H SF{args.generate:g} in {args.data} (if missing)", flush=True)
            generate_tpch(args.data, args.generate)
        print(f"[tpch] {join_cluster(args.address)}", flush=True)
        con = puffin.connect(address=args.address, target_partitions=args.target_partitions)
        register_tpch(con, args.data)
    except (puffin.PuffinError, OSError) as e:
        print(f"Error: {e}", file=sys.stderr, flush=True)
        return 1
    oracle = duckdb_oracle(args.data) if args.check else None
    if args.check:
        from puffin.testing import compare, has_order_by, order_keys

    failed: list[str] = []
    times: list[tuple[int, float, int]] = []
    for n in args.numbers:
        sql = puffin.tpch.query(n)
        label = f"q{n:02d}"
        print(f"[tpch] {label} running", flush=True)
        start = time.perf_counter()
        try:
            result = con.sql(sql)
        except puffin.PuffinError as e:
            print(f"[tpch] {label} FAILED: {e}", file=sys.stderr, flush=True)
            failed.append(label)
            continue
        elapsed = time.perf_counter() - start
        times.append((n, elapsed, len(result)))
        print(result.render(args.max_rows).rstrip("\n"), flush=True)
        print(f"[tpch] {label} {len(result)} row(s) in {elapsed:.3f} s", flush=True)
        if oracle is not None:
            expected = oracle.execute(sql).to_arrow_table()
            ordered = has_order_by(sql)
            keys = order_keys(sql, expected.column_names) if ordered else None
            problem = compare(result.arrow(), expected, ordered, check_names=True, order_keys=keys)
            print(f"[tpch] {label} {'matches DuckDB' if problem is None else 'DIFFERS from DuckDB: ' + problem}",
                  flush=True)
            if problem is not None:
                failed.append(label)
        if args.out:
            try:
                write_parquet(result.arrow(), f"{args.out.rstrip('/')}/{label}.parquet")
            except OSError as e:
                print(f"[tpch] {label} not written: {e}", file=sys.stderr, flush=True)
                failed.append(label)
    total = sum(t for _, t, _ in times)
    print(f"[tpch] {len(times)} of {len(args.numbers)} queries ran in {total:.3f} s"
          + (f"; failed: {', '.join(dict.fromkeys(failed))}" if failed else ""), flush=True)
    if args.out and times:
        print(f"[tpch] results in {args.out}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
