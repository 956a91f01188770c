"""The same data in many physical layouts, each with a DuckDB oracle over exactly the same bytes.

A *data set* is a dict of Arrow tables (TPC-H SF0.01 from tpchgen-cli, or the small feature
tables of test_features.py). A *layout* writes it out in one physical shape:

=================  ==================================================================================
single             one Parquet file per table, one row group
parts4             the big tables in 4 files with ONE row group each (``tpchgen-cli --parts=4`` without
                   ``--row-group-bytes``: for TPC-H it is that tool's output itself)
tiny_row_groups    one file per table, many small row groups (2000 rows for TPC-H)
many_files         the big tables in 100+ small files
with_empty_file    every table also has 0-row Parquet files (same schema) among its files
skewed             the big tables in 4 files, the first holding 90% of the rows
csv                CSV copies (written by DuckDB, header row); types are inferred on reading
json               newline-delimited JSON copies (written by DuckDB); types are inferred on reading
arrow              in-memory Arrow tables (``con.register(name, table)``)
s3                 the parts4 files on the S3 test server (SeaweedFS)
empty_parquet      every table as one 0-row Parquet file (same schema)
empty_arrow        every table as a 0-row in-memory Arrow table (same schema)
=================  ==================================================================================

CSV and JSON lose decimal types, so the oracle reads the same files with DuckDB's own
``read_csv``/``read_json`` inference, and Puffin registers the same directories. Layouts are
written once per session under the pytest base temp directory (``LayoutCache``).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import sqlglot
from sqlglot import exp

from puffin.demo import TABLES, generate_tpch

LAYOUTS = ("single", "parts4", "tiny_row_groups", "many_files", "with_empty_file", "skewed",
           "csv", "json", "arrow", "s3")
EMPTY_LAYOUTS = ("empty_parquet", "empty_arrow")
TPCH_SF = 0.01


@dataclass(frozen=True)
class DataSet:
    name: str
    load: Callable[[Path], dict[str, pa.Table]]  # (work directory) -> tables
    big: tuple[str, ...]  # tables split into several files
    tiny_group_rows: int  # rows per row group in tiny_row_groups
    many_files: int = 128  # files per big table in many_files (at most one per row)
    native_parts4: Callable[[Path], str] | None = None  # a ready parts4 directory (tpchgen-cli)


def _tpch_parts4_dir(work: Path) -> str:
    # exactly `tpchgen-cli parquet --parts=4` with no --row-group-bytes: one row group per file
    return generate_tpch(str(work / "tpchgen-parts4"), TPCH_SF, parts=4, row_group_bytes=None)


def _load_tpch(work: Path) -> dict[str, pa.Table]:
    base = _tpch_parts4_dir(work)
    out = {}
    for t in TABLES:
        files = sorted(str(p) for p in Path(base, t).glob("*.parquet"))
        out[t] = pa.concat_tables(pq.read_table(f) for f in files).combine_chunks()
    return out


TPCH = DataSet("tpch", _load_tpch, big=("lineitem", "orders"), tiny_group_rows=2000,
               native_parts4=_tpch_parts4_dir)


def features_dataset(tables: Callable[[], dict[str, pa.Table]]) -> DataSet:
    """The feature corpus's small tables (emp, dept, sales, nums): every table but dept is split."""
    return DataSet("features", lambda _work: tables(), big=("emp", "sales", "nums"), tiny_group_rows=4)


@dataclass
class Layout:
    """One data set in one layout: what Puffin registers and what the oracle reads."""

    dataset: str
    name: str
    tables: dict[str, str | pa.Table]  # table -> location (directory, s3:// prefix) or Arrow table
    oracle_reads: dict[str, str | pa.Table]  # table -> DuckDB table expression or Arrow table
    s3: dict | None = None  # connect(s3=...) options for s3 layouts
    _oracle: duckdb.DuckDBPyConnection | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return f"{self.dataset}-{self.name}"

    def register(self, con) -> None:
        for name, obj in self.tables.items():
            con.register(name, obj)

    def oracle(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with every table as a view over the same files (or Arrow tables)."""
        if self._oracle is None:
            con = duckdb.connect()
            for name, read in self.oracle_reads.items():
                if isinstance(read, pa.Table):
                    con.register(name, read)
                else:
                    con.execute(f'CREATE VIEW "{name}" AS SELECT * FROM {read}')
            self._oracle = con
        return self._oracle


# -- writers ------------------------------------------------------------------------------------
def _slices(table: pa.Table, n: int) -> list[pa.Table]:
    """``table`` cut into ``n`` contiguous pieces of near-equal size (fewer if it has fewer rows)."""
    n = max(1, min(n, table.num_rows))
    step = math.ceil(table.num_rows / n) if table.num_rows else 0
    return [table.slice(i * step, step) for i in range(n)] if step else [table]


def _skewed(table: pa.Table, shares=(0.90, 0.07, 0.02, 0.01)) -> list[pa.Table]:
    cuts, acc = [], 0.0
    for s in shares[:-1]:
        acc += s
        cuts.append(round(table.num_rows * acc))
    bounds = [0, *cuts, table.num_rows]
    return [table.slice(a, b - a) for a, b in itertools.pairwise(bounds) if b > a] or [table]


def _write_parquet(directory: Path, name: str, pieces: list[pa.Table], group_rows: int | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    width = len(str(len(pieces)))
    for i, piece in enumerate(pieces, 1):
        path = directory / (f"{name}.parquet" if len(pieces) == 1 else f"{name}.{i:0{width}d}.parquet")
        # one row group per file unless group_rows says otherwise
        pq.write_table(piece, path, row_group_size=group_rows or max(1, piece.num_rows))


def _write_text(directory: Path, name: str, pieces: list[pa.Table], fmt: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    for i, piece in enumerate(pieces, 1):
        path = directory / (f"{name}.{fmt}" if len(pieces) == 1 else f"{name}.{i}.{fmt}")
        con.register("piece", piece)
        opts = "HEADER" if fmt == "csv" else "FORMAT json"
        con.execute(f"COPY (SELECT * FROM piece) TO '{path}' ({opts})")
        con.unregister("piece")


def _parquet_layout(ds: DataSet, tables: dict[str, pa.Table], out: Path, kind: str) -> None:
    for t, table in tables.items():
        big = t in ds.big
        d = out / t
        if kind == "single":
            _write_parquet(d, t, [table])
        elif kind == "parts4":
            _write_parquet(d, t, _slices(table, 4) if big else [table])
        elif kind == "tiny_row_groups":
            _write_parquet(d, t, [table], group_rows=ds.tiny_group_rows)
        elif kind == "many_files":
            _write_parquet(d, t, _slices(table, ds.many_files) if big else [table])
        elif kind == "skewed":
            _write_parquet(d, t, _skewed(table) if big else [table])
        elif kind == "with_empty_file":
            _write_parquet(d, t, _slices(table, 3) if big else [table])
            empty = table.schema.empty_table()
            for fname in (f"{t}.0-empty.parquet", f"{t}.2-empty.parquet"):  # first, and among the others
                pq.write_table(empty, d / fname)
        elif kind == "empty_parquet":
            _write_parquet(d, t, [table.schema.empty_table()])
        else:
            raise ValueError(kind)


def _files(directory: Path, ext: str) -> list[str]:
    return sorted(str(p) for p in directory.glob(f"*.{ext}"))


def _duckdb_list(paths: list[str]) -> str:
    return "[" + ", ".join(f"'{p}'" for p in paths) + "]"


class LayoutCache:
    """Builds each (data set, layout) once per session under ``root``."""

    def __init__(self, root: Path):
        self.root = root
        self._tables: dict[str, dict[str, pa.Table]] = {}
        self._layouts: dict[tuple[str, str], Layout] = {}

    def tables(self, ds: DataSet) -> dict[str, pa.Table]:
        if ds.name not in self._tables:
            work = self.root / ds.name
            work.mkdir(parents=True, exist_ok=True)
            self._tables[ds.name] = ds.load(work)
        return self._tables[ds.name]

    def get(self, ds: DataSet, layout: str, s3: Callable[[], tuple] | None = None) -> Layout:
        """``ds`` in ``layout``; ``s3`` gives (S3Server, bucket) for the s3 layout, called once."""
        key = (ds.name, layout)
        if key not in self._layouts:
            self._layouts[key] = self._build(ds, layout, s3)
        return self._layouts[key]

    def _build(self, ds: DataSet, layout: str, s3) -> Layout:
        tables = self.tables(ds)
        out = self.root / ds.name / layout
        if layout == "arrow":
            return Layout(ds.name, layout, dict(tables), dict(tables))
        if layout == "empty_arrow":
            empty = {t: table.schema.empty_table() for t, table in tables.items()}
            return Layout(ds.name, layout, empty, dict(empty))
        if layout == "s3":
            if s3 is None:
                raise ValueError("the s3 layout needs the S3 test server")
            return self._s3(ds, *s3())
        if layout in ("csv", "json"):
            if not (out / "_SUCCESS").exists():
                for t, table in tables.items():
                    _write_text(out / t, t, _slices(table, 3) if t in ds.big else [table], layout)
                (out / "_SUCCESS").touch()
            reader = "read_csv" if layout == "csv" else "read_json"
            return Layout(ds.name, layout, {t: str(out / t) for t in tables},
                          {t: f"{reader}({_duckdb_list(_files(out / t, layout))})" for t in tables})
        if layout == "parts4" and ds.native_parts4 is not None:
            out = Path(ds.native_parts4(self.root / ds.name))
        elif not (out / "_SUCCESS").exists():
            _parquet_layout(ds, tables, out, layout)
            (out / "_SUCCESS").touch()
        return Layout(ds.name, layout, {t: str(out / t) for t in tables},
                      {t: f"read_parquet({_duckdb_list(_files(out / t, 'parquet'))})" for t in tables})

    def _s3(self, ds: DataSet, server, bucket: str) -> Layout:
        """The parts4 files uploaded to the S3 test server; the oracle reads the local originals."""
        local = self.get(ds, "parts4")
        client = server.client()
        prefix = f"layouts/{ds.name}"
        for t, location in local.tables.items():
            for path in _files(Path(location), "parquet"):
                client.upload_file(path, bucket, f"{prefix}/{t}/{os.path.basename(path)}")
        creds = {"endpoint_url": server.endpoint, "access_key_id": server.access_key,
                 "secret_access_key": server.secret_key, "region": server.region}
        return Layout(ds.name, "s3", {t: f"s3://{bucket}/{prefix}/{t}" for t in local.tables},
                      dict(local.oracle_reads), s3=creds)


# -- queries selecting nothing ------------------------------------------------------------------
def select_nothing(sql: str, first_columns: dict[str, str]) -> str:
    """``sql`` with every base table ``t`` replaced by ``(SELECT * FROM t WHERE <first column> < 0)``
    (all TPC-H keys are >= 0): the same query over inputs a filter empties."""
    tree = sqlglot.parse_one(sql, read="duckdb")

    def swap(node):
        if isinstance(node, exp.Table) and node.name.lower() in first_columns and not node.args.get("db"):
            name = node.name.lower()
            alias = node.alias or name
            inner = sqlglot.parse_one(f"SELECT * FROM {name} WHERE {first_columns[name]} < 0", read="duckdb")
            return exp.Subquery(this=inner, alias=exp.TableAlias(this=exp.to_identifier(alias)))
        return node

    return tree.transform(swap).sql(dialect="duckdb")
