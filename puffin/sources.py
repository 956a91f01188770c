"""Data sources: what a table name stands for, its schema, its size, and how it splits.

A source is resolved once, when registered or first referenced, into plain data: a list of
*scan units* (a Parquet row group, a CSV/JSON file, a slice of an in-memory Arrow table) with
row and byte counts. The planner groups units into scan fragments by bytes; the operators read
them (``puffin.operators.scan``).
"""

from __future__ import annotations

import fnmatch
import glob
import itertools
import os
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from puffin.errors import BindError, NotSupportedError, PuffinError
from puffin.storage import S3Config, is_s3, s3_filesystem, storage_error, strip_scheme

FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
}
ARROW_SLICE_ROWS = 1 << 17  # in-memory tables split into slices of at most this many rows
ARROW_MIN_SLICES = 16  # ... and into at least this many, so small tables still spread out
_source_ids = itertools.count()


@dataclass(frozen=True)
class ScanUnit:
    """The smallest piece of a source a fragment reads."""

    rows: int
    bytes: int
    path: str = ""
    row_groups: tuple[int, ...] | None = None  # Parquet row groups; None = whole file
    partition: tuple[tuple[str, Any], ...] = ()  # Hive partition values
    first_row: int = 0  # Parquet: index in the file of the unit's first row
    file_rows: int = 0  # Parquet: rows in the whole file
    task: Any = field(default=None, compare=False, repr=False)  # Iceberg: pyiceberg FileScanTask
    offset: int = 0  # in-memory sources: slice of the table
    length: int = 0


@dataclass(frozen=True)
class Source:
    """A resolved table: kind is 'parquet', 'csv', 'json' or 'arrow'."""

    name: str
    kind: str
    schema: pa.Schema
    units: tuple[ScanUnit, ...]
    location: str = ""
    options: tuple[tuple[str, Any], ...] = ()
    source_id: int = field(default_factory=lambda: next(_source_ids))
    table: pa.Table | None = field(default=None, compare=False, repr=False)
    storage: S3Config | None = field(default=None, repr=False)  # None: local files
    iceberg: Any = field(default=None, compare=False, repr=False)  # puffin.iceberg.IcebergTable

    @property
    def rows(self) -> int:
        return sum(u.rows for u in self.units)

    @property
    def bytes(self) -> int:
        return sum(u.bytes for u in self.units)

    def describe(self) -> str:
        where = self.location or "memory"
        return f"{self.kind} {where} ({len(self.units)} units, {self.rows} rows)"


def from_arrow(name: str, table: pa.Table) -> Source:
    table = table.combine_chunks() if table.num_rows else table
    units = []
    step = max(1, min(ARROW_SLICE_ROWS, -(-table.num_rows // ARROW_MIN_SLICES)))
    for off in range(0, max(table.num_rows, 1), step):
        n = min(step, table.num_rows - off)
        nbytes = table.slice(off, n).nbytes if n else 0
        units.append(ScanUnit(rows=n, bytes=nbytes, offset=off, length=n))
    return Source(name, "arrow", table.schema, tuple(units), table=table)


def from_object(name: str, obj: Any) -> Source:
    """Anything a user may register: a path or glob, a pyarrow Table, a pandas DataFrame."""
    if isinstance(obj, (str, os.PathLike)):
        return from_path(name, os.fspath(obj))
    if isinstance(obj, pa.Table):
        return from_arrow(name, obj)
    if isinstance(obj, pa.RecordBatch):
        return from_arrow(name, pa.Table.from_batches([obj]))
    if type(obj).__module__.startswith("pandas"):
        return from_arrow(name, pa.Table.from_pandas(obj, preserve_index=False))
    raise NotSupportedError(
        f"cannot register a {type(obj).__name__} as table {name!r}: "
        "give a path, glob, directory, pyarrow Table or pandas DataFrame"
    )


def _format_of(paths: list[str], fmt: str | None) -> str:
    if fmt:
        if fmt not in ("parquet", "csv", "json"):
            raise NotSupportedError(f"file format {fmt!r} (supported: parquet, csv, json)")
        return fmt
    exts = {os.path.splitext(p)[1].lower() for p in paths}
    kinds = {FORMATS.get(e) for e in exts}
    if len(kinds) == 1 and None not in kinds:
        return kinds.pop()
    raise BindError(
        f"cannot tell the file format of {paths[0]!r}{' and others' if len(paths) > 1 else ''}: "
        "name it with format='parquet'|'csv'|'json' or use read_parquet/read_csv/read_json"
    )


def _list_files(location: str) -> tuple[list[str], bool]:
    """Files a location stands for, and whether it is a directory (Hive layout possible)."""
    if os.path.isdir(location):
        files = sorted(
            os.path.join(root, f)
            for root, _, names in os.walk(location)
            for f in names
            if not f.startswith((".", "_"))
        )
        return files, True
    if any(ch in location for ch in "*?["):
        return sorted(p for p in glob.glob(location, recursive=True) if os.path.isfile(p)), False
    if os.path.isfile(location):
        return [location], False
    return [], False


def _list_s3(location: str, fs: pafs.S3FileSystem) -> tuple[list[str], bool, str]:
    """Objects under an s3:// URL (a key, a prefix or a glob): (paths, is_prefix, base)."""
    path = strip_scheme(location)
    if any(ch in path for ch in "*?["):
        base = path[: min(path.find(ch) for ch in "*?[" if ch in path)].rsplit("/", 1)[0]
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        return sorted(i.path for i in infos if i.type == pafs.FileType.File and fnmatch.fnmatch(i.path, path)), False, base
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return [path], False, path
    infos = fs.get_file_info(pafs.FileSelector(path.rstrip("/"), recursive=True, allow_not_found=True))
    names = [i.path for i in infos if i.type == pafs.FileType.File]
    keep = [p for p in names if not os.path.basename(p).startswith((".", "_"))]
    return sorted(keep), True, path.rstrip("/")


def _file_format(kind: str, options: dict[str, Any]) -> ds.FileFormat:
    if kind == "parquet":
        return ds.ParquetFileFormat()
    if kind == "csv":
        import pyarrow.csv as pcsv

        delim = options.get("delim") or options.get("sep") or options.get("delimiter") or ","
        header = options.get("header", True)
        parse = pcsv.ParseOptions(delimiter=delim)
        read = pcsv.ReadOptions(autogenerate_column_names=not header)
        return ds.CsvFileFormat(parse_options=parse, read_options=read)
    return ds.JsonFileFormat()


def file_format(source: Source) -> ds.FileFormat:
    return _file_format(source.kind, dict(source.options))


def listing(location: str | list[str], s3: S3Config | None = None) -> tuple:
    """What a location holds now (paths, and for local files their size and mtime): a cheap
    check of whether a source made from it earlier is still current."""
    out = []
    for loc in location if isinstance(location, list) else [location]:
        if is_s3(loc):
            out += _list_s3(loc, s3_filesystem(s3 or S3Config.resolve()))[0]
        else:
            for path in _list_files(loc)[0]:
                st = os.stat(path)
                out.append((path, st.st_size, st.st_mtime_ns))
    return tuple(out)


def from_path(
    name: str,
    location: str | list[str],
    fmt: str | None = None,
    options: dict[str, Any] | None = None,
    s3: S3Config | None = None,
) -> Source:
    """A file source; ``s3`` is used for s3:// locations (resolved from the environment if None)."""
    locations = location if isinstance(location, list) else [location]
    if any(is_s3(loc) for loc in locations):
        s3 = s3 or S3Config.resolve()
        try:
            return _from_files(name, location, fmt, options, s3, s3_filesystem(s3))
        except OSError as e:
            raise storage_error(e, ", ".join(locations), s3) from None
    return _from_files(name, location, fmt, options, None, None)


def _from_files(name, location, fmt, options, s3, fs) -> Source:
    options = dict(options or {})
    base = None
    if isinstance(location, list):
        listed = [(_list_s3(loc, fs) if fs else (*_list_files(loc), None)) for loc in location]
        files = [f for entry in listed for f in entry[0]]
        is_dir, location = False, ",".join(location)
    elif fs is not None:
        files, is_dir, base = _list_s3(location, fs)
    else:
        files, is_dir = _list_files(location)
    if not files:
        raise BindError(f"no files found at {location!r} (for table {name!r})")
    kind = _format_of(files, fmt)
    hive = options.pop("hive_partitioning", is_dir)
    try:
        if is_dir and hive:
            partitioning = ds.HivePartitioning.discover(infer_dictionary=False)
            dataset = ds.dataset(files, format=_file_format(kind, options), filesystem=fs,
                                 partitioning=partitioning, partition_base_dir=base or location)
        else:
            dataset = ds.dataset(files, format=_file_format(kind, options), filesystem=fs)
    except pa.ArrowInvalid as e:
        raise BindError(f"cannot read {kind} files at {location!r}: {e}") from e
    except OSError as e:
        if fs is not None:
            raise
        raise PuffinError(f"cannot read {kind} files at {location!r}: {e}") from e
    units: list[ScanUnit] = []
    for frag in dataset.get_fragments():
        part = tuple(sorted(ds.get_partition_keys(frag.partition_expression).items()))
        if kind == "parquet":
            meta = frag.metadata
            first = 0
            for i in range(meta.num_row_groups):
                rg = meta.row_group(i)
                units.append(ScanUnit(rg.num_rows, rg.total_byte_size, frag.path, (i,), part,
                                      first_row=first, file_rows=meta.num_rows))
                first += rg.num_rows
        else:
            size = fs.get_file_info(frag.path).size if fs else os.path.getsize(frag.path)
            units.append(ScanUnit(max(1, size // 100), size, frag.path, None, partition=part))
    return Source(name, kind, dataset.schema, tuple(units), location, tuple(options.items()), storage=s3)
