"""Data sources: what a table name stands for, its schema, its size, and how it splits.

A source is resolved once, when registered or first referenced, into plain data: a list of
*scan units* (a Parquet row group, a CSV/JSON file, a slice of an in-memory Arrow table) with
row and byte counts. The planner groups units into scan fragments by bytes; the operators read
them (``puffin.operators.scan``).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import glob
import itertools
import os
import re
import threading
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from puffin import signals
from puffin.errors import BindError, NotSupportedError
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
    missing: tuple[str, ...] = ()  # Parquet: the table's columns this file does not have (NULL)
    retype: tuple[str, ...] = ()  # Parquet: columns stored as another type than the table's (cast)
    unify: bool = False  # Parquet: the table's files disagree; read them by column name


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


def _without_views(t: pa.DataType) -> pa.DataType:
    """string_view/binary_view (also nested) as string/binary: Ray's object store cannot ship
    view arrays, and DuckDB reads both as the same VARCHAR/BLOB."""
    if pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_list(t):
        return pa.list_(t.value_field.with_type(_without_views(t.value_type)))
    if pa.types.is_large_list(t):
        return pa.large_list(t.value_field.with_type(_without_views(t.value_type)))
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(_without_views(f.type)) for f in t])
    return t


def from_arrow(name: str, table: pa.Table) -> Source:
    table = table.combine_chunks() if table.num_rows else table
    plain = pa.schema([f.with_type(_without_views(f.type)) for f in table.schema], metadata=table.schema.metadata)
    if not plain.equals(table.schema):
        table = table.cast(plain)
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
        files = []
        for root, dirs, names in os.walk(location):
            dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]  # a write's staging, Spark's _temporary
            files += [os.path.join(root, f) for f in names if not f.startswith((".", "_"))]
        return sorted(files), True
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
    base = path.rstrip("/")
    keep = [p for p in names if not any(part.startswith((".", "_")) for part in p[len(base):].split("/"))]
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


def _duckdb_text_schema(kind: str, files: list[str], options: dict[str, Any], found: pa.Schema) -> pa.Schema:
    """The column types DuckDB infers for CSV/JSON files (a date stays a DATE, where pyarrow's
    JSON reader makes it a timestamp): Puffin answers as DuckDB would over the same files.
    Partition columns (Hive) keep the types found for them."""
    import duckdb

    from puffin.operators.sqltext import literal

    args = "[" + ", ".join(literal(f) for f in files) + "], hive_partitioning=false"
    if kind == "csv":
        delim = options.get("delim") or options.get("sep") or options.get("delimiter") or ","
        args += f", delim={literal(delim)}, header={literal(bool(options.get('header', True)))}"
    reader = "read_csv" if kind == "csv" else "read_json"
    try:
        inferred = signals.connect().sql(f"SELECT * FROM {reader}({args}) LIMIT 0").to_arrow_table().schema
    except duckdb.Error:
        return found  # pyarrow's reading of them stands
    by_name = {f.name: f for f in inferred}
    return pa.schema([by_name.get(f.name, f) for f in found], metadata=found.metadata)


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


def _differences(unit: ScanUnit, schema: pa.Schema, own: pa.Schema | None) -> ScanUnit:
    """``unit`` marked with how its file differs from the table's schema."""
    if own is None:
        return unit
    partition = dict(unit.partition)
    names = set(own.names)
    missing = tuple(c for c in schema.names if c not in names and c not in partition)
    retype = tuple(c for c in schema.names if c in names and not own.field(c).type.equals(schema.field(c).type))
    return dataclasses.replace(unit, missing=missing, retype=retype, unify=True)


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
    except (pa.ArrowException, OSError) as e:
        if fs is not None and isinstance(e, OSError):
            raise  # from_path names the object store's problem (access, bucket, network)
        path = next((f for f in files if f in str(e)), None)
        if path is not None:
            raise _unreadable(kind, _shown(path, fs), e, name) from None
        of = f" (table {name!r})" if name != location else ""
        raise BindError(f"cannot read {kind} files at {location!r}{of}: {_reason(kind, e)}") from None
    units: list[ScanUnit] = []
    footers: list[tuple[str, pa.Schema]] = []  # each Parquet file's own schema, from its footer
    for frag in dataset.get_fragments():
        part = tuple(sorted(ds.get_partition_keys(frag.partition_expression).items()))
        if kind == "parquet":
            try:
                meta = frag.metadata
                footers.append((frag.path, frag.physical_schema))  # kept with the footer: no new read
            except (pa.ArrowException, OSError) as e:
                if fs is not None and isinstance(e, OSError):
                    raise  # from_path names the object store's problem
                raise _unreadable(kind, _shown(frag.path, fs), e, name) from None
            first = 0
            for i in range(meta.num_row_groups):
                rg = meta.row_group(i)
                units.append(ScanUnit(rg.num_rows, rg.total_byte_size, frag.path, (i,), part,
                                      first_row=first, file_rows=meta.num_rows))
                first += rg.num_rows
        else:
            size = fs.get_file_info(frag.path).size if fs else os.path.getsize(frag.path)
            units.append(ScanUnit(max(1, size // 100), size, frag.path, None, partition=part))
    schema = _unified_schema(dataset.schema, footers, name, fs) if footers else dataset.schema
    if kind in ("csv", "json") and fs is None:
        schema = _duckdb_text_schema(kind, [u.path for u in units], options, schema)
    if footers and len({_schema_text(s) for _, s in footers} | {_schema_text(schema)}) > 1:
        # files that disagree with the table: missing columns read as NULL, others cast
        own = dict(footers)
        units = [_differences(u, schema, own.get(u.path)) for u in units]
    return Source(name, kind, schema, tuple(units), location, tuple(options.items()), storage=s3)


# -- unreadable files -----------------------------------------------------------------------------
def _shown(path: str, fs) -> str:
    return f"s3://{path}" if fs is not None else path


def _reason(kind: str, e: Exception) -> str:
    text = str(e)
    if "file size is 0 bytes" in text:
        return "the file is empty (0 bytes)"
    if "magic bytes not found" in text:
        return ("it is not a Parquet file, or it is truncated (no Parquet footer at its end)"
                if kind == "parquet" else "it is not in the expected format")
    text = re.sub(r"^.*?(?:Is this a '\w+' file\?: |Could not open \w+ input source '[^']*': )", "", text)
    return text.splitlines()[0] if text else type(e).__name__


def _unreadable(kind: str, path: str, e: Exception, table: str) -> BindError:
    of = f" (table {table!r})" if table != path else ""
    return BindError(f"cannot read {kind} file {path!r}{of}: {_reason(kind, e)}")


# -- one schema for files whose types differ ------------------------------------------------------
_duck_lock = threading.Lock()
_duck = None


def _unified_schema(first: pa.Schema, footers: list[tuple[str, pa.Schema]], table: str, fs) -> pa.Schema:
    """The table's schema over all its Parquet files, as DuckDB's ``read_parquet(...,
    union_by_name=true)`` reads them: columns by name (missing ones NULL), each column of the
    type DuckDB unifies the files' types to (int32 + int64 -> int64, decimal(12,2) +
    decimal(15,2) -> decimal(15,2), string + large_string -> string). Types without a common
    type (a number in one file, text in another) are an error naming the files and column.
    ``first`` is pyarrow's schema (the first file's, then Hive partition columns); it is kept
    as it is when every file agrees with it."""
    head = footers[0][1]
    text = _schema_text(head)
    if all(_schema_text(s) == text for _, s in footers[1:]):  # about 3 us a file
        return first
    order: list[str] = []
    seen: dict[str, list[tuple[str, pa.Field]]] = {}
    for path, schema in footers:
        for f in schema:
            if f.name not in seen:
                order.append(f.name)
                seen[f.name] = []
            seen[f.name].append((path, f))
    fields = []
    for col in order:
        found = seen[col]
        distinct: list[pa.DataType] = []
        for _, f in found:
            if not any(f.type.equals(t) for t in distinct):
                distinct.append(f.type)
        typ = distinct[0] if len(distinct) == 1 else _common_type(col, found, table, fs)
        nullable = len(found) < len(footers) or any(f.nullable for _, f in found)
        fields.append(pa.field(col, typ, nullable))
    physical = set(order)
    fields += [f for f in first if f.name not in physical]  # Hive partition columns
    return pa.schema(fields)


def _schema_text(schema: pa.Schema) -> str:
    """Names, types and nullability (cold, this compares faster than Schema.equals)."""
    return schema.to_string(show_field_metadata=False, show_schema_metadata=False)


def _family(t: pa.DataType):
    """What kind of value a type holds; types of different kinds have no common type."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_null(t):
        return None
    if pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "number"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", bool)(t):
        return "text"
    if (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)
            or getattr(pa.types, "is_binary_view", bool)(t)):
        return "binary"
    if pa.types.is_date(t) or pa.types.is_timestamp(t):
        return "date/time"
    if pa.types.is_time(t):
        return "time of day"
    if pa.types.is_duration(t) or pa.types.is_interval(t):
        return "interval"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t) \
            or getattr(pa.types, "is_list_view", bool)(t):
        return ("list", _family(t.value_type))
    if pa.types.is_struct(t):
        return "struct"
    if pa.types.is_map(t):
        return "map"
    return str(t)


def _common_type(col: str, found: list[tuple[str, pa.Field]], table: str, fs) -> pa.DataType:
    distinct: list[tuple[str, pa.DataType]] = []  # each type, with the first file that has it
    for path, f in found:
        if not any(f.type.equals(t) for _, t in distinct):
            distinct.append((path, f.type))
    kinds: dict[Any, tuple[str, pa.DataType]] = {}
    for path, t in distinct:
        kinds.setdefault(_family(t), (path, t))
    kinds.pop(None, None)
    (p1, t1), (p2, t2) = list(kinds.values())[:2] if len(kinds) > 1 else distinct[:2]
    of = f" of table {table!r}" if not any(table == _shown(p, fs) for p, _ in distinct) else ""
    clash = BindError(
        f"column {col!r}{of} has types with no common type in its files: "
        f"{t1} in {_shown(p1, fs)!r} but {t2} in {_shown(p2, fs)!r}; "
        "rewrite the files with one type, or register them as separate tables")
    if len(kinds) > 1 and set(kinds) != {"text", "binary"}:
        raise clash
    try:
        return _duckdb_common_type([t for _, t in distinct])
    except (duckdb.Error, pa.ArrowException, KeyError):
        raise clash from None


def _duckdb_common_type(types: list[pa.DataType]) -> pa.DataType:
    """The Arrow type DuckDB gives a column of these types unified (UNION ALL BY NAME, the rule
    ``read_parquet(..., union_by_name=true)`` follows), found on empty tables."""
    global _duck
    with _duck_lock:
        if _duck is None:
            _duck = signals.connect()
        names = [f"__unify_{i}" for i in range(len(types))]
        try:
            for n, t in zip(names, types):
                _duck.register(n, pa.schema([pa.field("c", t)]).empty_table())
            rel = _duck.sql(" UNION ALL BY NAME ".join(f"SELECT c FROM {n}" for n in names))
            return rel.limit(0).to_arrow_table().schema.field("c").type
        finally:
            for n in names:
                _duck.unregister(n)
