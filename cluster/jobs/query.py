"""Run one SQL statement on the Ray cluster this job runs in: print the result as DuckDB does,
and write it to a file (local or s3://) with --out.

    # through the cluster launcher (the script is copied to the head and run there). The remote
    # shell splits and expands the arguments again: quote the SQL once more for it.
    ray submit cluster/aws.yaml cluster/jobs/query.py -- \\
        "'SELECT l_returnflag, count(*) FROM lineitem GROUP BY 1'" \\
        --tpch s3://bucket/tpch/sf100 --out s3://bucket/results/flags.parquet

    # through Ray's Jobs API (no SSH; the arguments arrive as typed)
    ray job submit --address http://127.0.0.1:8265 --working-dir cluster/jobs -- \\
        python query.py "SELECT count(*) FROM orders" -r orders=s3://bucket/tpch/sf100/orders

Tables: --register NAME=PATH (a file, glob or directory; repeatable), --tables DIR (every
folder of DIR is a table named after it) or --tpch DIR (the eight TPC-H tables in DIR/<table>).
Paths are read where the query's tasks run: on a cluster of several machines use s3://.

Exit status: 0 when the statement ran (and the result was written), 1 on an error (Puffin's
message on stderr), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="query.py", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sql", nargs="*", help="the statement (its words are joined with spaces)")
    ap.add_argument("--file", "-f", help="read the statement from this file (local or s3://)")
    ap.add_argument("--register", "-r", action="append", default=[], metavar="NAME=PATH",
                    help="name a file, glob or directory as a table (repeatable)")
    ap.add_argument("--tables", action="append", default=[], metavar="DIR",
                    help="register every folder of DIR (local or s3://) as a table named after it")
    ap.add_argument("--tpch", metavar="DIR", help="register the TPC-H tables in DIR/<table>")
    ap.add_argument("--out", "-o", metavar="PATH",
                    help="write the result here (local or s3://); the format follows the extension")
    ap.add_argument("--format", choices=("parquet", "csv", "json"),
                    help="format of --out (default: from its extension, else parquet)")
    ap.add_argument("--address", default="auto",
                    help="the Ray cluster (default: auto, the cluster this job runs in; RAY_ADDRESS wins)")
    ap.add_argument("--dialect", default="duckdb", help="SQL dialect of the statement (any of sqlglot's)")
    ap.add_argument("--timeout", type=float, default=None, help="cancel the query after this many seconds")
    ap.add_argument("--max-rows", type=int, default=40, help="rows printed (the rest are counted)")
    args = ap.parse_args(argv)
    if bool(args.sql) == bool(args.file):
        ap.error("give the SQL text or --file, one of them")
    for pair in args.register:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            ap.error(f"--register {pair!r}: expected NAME=PATH")
    return args


# -- files, local or on the object store --------------------------------------------------------
def filesystem(path: str):
    """(pyarrow filesystem, path inside it): S3 settings from the AWS environment, as Puffin reads them."""
    import pyarrow.fs as pafs

    from puffin import storage

    if storage.is_s3(path):
        return storage.s3_filesystem(storage.S3Config.resolve()), storage.strip_scheme(path)
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))


def read_text(path: str) -> str:
    fs, inner = filesystem(path)
    with fs.open_input_stream(inner) as f:
        return f.read().decode("utf-8")


def folders(directory: str) -> list[tuple[str, str]]:
    """(name, path) of every folder in ``directory``, sorted; hidden and _-prefixed ones skipped."""
    import pyarrow.fs as pafs

    fs, inner = filesystem(directory)
    base = directory.rstrip("/")
    found = []
    for info in fs.get_file_info(pafs.FileSelector(inner, recursive=False)):
        if info.type == pafs.FileType.Directory and not info.base_name.startswith((".", "_")):
            found.append((info.base_name, f"{base}/{info.base_name}"))
    return sorted(found)


def write_result(result, path: str, fmt: str | None) -> None:
    """The result at ``path`` in ``fmt``: written beside it first, then moved (or uploaded) in
    one step, so a reader never sees half a file."""
    import pyarrow.fs as pafs

    from puffin.cli import output

    fmt = fmt or {".csv": "csv", ".json": "json"}.get(os.path.splitext(path)[1].lower(), "parquet")
    fs, inner = filesystem(path)
    if isinstance(fs, pafs.LocalFileSystem):
        os.makedirs(os.path.dirname(inner) or ".", exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".query-", suffix="." + fmt, dir=os.path.dirname(inner) or ".")
    else:
        fd, tmp = tempfile.mkstemp(prefix="query-", suffix="." + fmt)
    os.close(fd)
    try:
        output.write(result, fmt, tmp)
        if isinstance(fs, pafs.LocalFileSystem):
            os.replace(tmp, inner)
        else:
            pafs.copy_files(tmp, inner, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# -- the job ------------------------------------------------------------------------------------
def join_cluster(address: str) -> str:
    """Join the cluster as this job's driver (Puffin then runs every query there); a line saying where."""
    from puffin import runtime  # Puffin's one Ray importer

    runtime.join(address)
    return runtime.describe_cluster()


def register_tables(con, args: argparse.Namespace) -> list[str]:
    names = []
    if args.tpch:
        from puffin.demo import TABLES

        for t in TABLES:
            con.register(t, f"{args.tpch.rstrip('/')}/{t}")
            names.append(t)
    for directory in args.tables:
        for name, path in folders(directory):
            con.register(name, path)
            names.append(name)
    for pair in args.register:
        name, _, path = pair.partition("=")
        con.register(name.strip(), path.strip())
        names.append(name.strip())
    return names


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import puffin

    try:
        sql = read_text(args.file) if args.file else " ".join(args.sql)
        print(f"[query] {join_cluster(args.address)}", flush=True)
        con = puffin.connect(address=args.address)
        tables = register_tables(con, args)
        if tables:
            print(f"[query] tables: {', '.join(tables)}", flush=True)
        start = time.perf_counter()
        result = con.sql(sql, dialect=args.dialect, timeout=args.timeout)
        elapsed = time.perf_counter() - start
        print(result.render(args.max_rows).rstrip("\n"), flush=True)
        print(f"[query] {len(result)} row(s) in {elapsed:.3f} s", flush=True)
        if args.out:
            write_result(result, args.out, args.format)
            print(f"[query] wrote {len(result)} row(s) to {args.out}", flush=True)
    except puffin.PuffinError as e:
        print(f"Error: {e}", file=sys.stderr, flush=True)
        return 1
    except (OSError, ConnectionError) as e:
        print(f"Error: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
