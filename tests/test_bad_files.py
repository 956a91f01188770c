"""Bad and disagreeing files: a clear error naming the file, or one table with one schema.

Truncated and zero-byte Parquet files are BindErrors naming the file; files of one table whose
column types differ read as one table with the types DuckDB's
``read_parquet(..., union_by_name=true)`` gives (Source.schema is that schema), and types with
no common type are a BindError naming the column and files.
"""

from __future__ import annotations

import decimal
import os

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import puffin
from puffin import sources


def _good() -> pa.Table:
    return pa.table({"id": pa.array([1, 2], pa.int32()), "s": ["a", "b"]})


def _write(d, files: dict[str, pa.Table | bytes]) -> str:
    os.makedirs(d, exist_ok=True)
    for name, content in files.items():
        path = os.path.join(d, name)
        if isinstance(content, bytes):
            with open(path, "wb") as f:
                f.write(content)
        else:
            pq.write_table(content, path)
    return str(d)


def _parquet_bytes(tmp_path, table: pa.Table) -> bytes:
    path = tmp_path / "whole.parquet"
    pq.write_table(table, path)
    return path.read_bytes()


def _duckdb_types(d: str) -> list[tuple[str, pa.DataType]]:
    rel = duckdb.connect().sql(f"SELECT * FROM read_parquet('{d}/*.parquet', union_by_name=true)")
    return [(f.name, f.type) for f in rel.limit(0).to_arrow_table().schema]


def _types(schema: pa.Schema) -> list[tuple[str, pa.DataType]]:
    return [(f.name, f.type) for f in schema]


@pytest.fixture(scope="module")
def con(local_ray):
    return puffin.connect(target_partitions=2)


# -- unreadable files ------------------------------------------------------------------------------
def test_zero_byte_file_is_named(con, tmp_path):
    d = _write(tmp_path / "zero", {"a.parquet": _good(), "b.parquet": b""})
    bad = os.path.join(d, "b.parquet")
    with pytest.raises(puffin.BindError) as info:
        con.register("zero", d)
    assert bad in str(info.value) and "empty (0 bytes)" in str(info.value)
    with pytest.raises(puffin.BindError, match="empty"):
        con.sql(f"SELECT * FROM '{bad}'")
    assert con.sql("SELECT 1 AS x").fetchall() == [(1,)]


@pytest.mark.parametrize("where", ["first", "last"])
def test_truncated_file_is_named(con, tmp_path, where):
    data = _parquet_bytes(tmp_path, _good())
    files = {"a.parquet": data[: len(data) // 2], "b.parquet": _good()}
    if where == "last":
        files = {"a.parquet": _good(), "b.parquet": data[:-4]}
    d = _write(tmp_path / f"trunc_{where}", files)
    bad = os.path.join(d, "a.parquet" if where == "first" else "b.parquet")
    with pytest.raises(puffin.BindError) as info:
        con.sql(f"SELECT count(*) FROM '{d}/*.parquet'")
    message = str(info.value)
    assert bad in message and "truncated" in message, message
    assert "ArrowInvalid" not in message and "magic bytes" not in message


def test_not_a_parquet_file(con, tmp_path):
    d = _write(tmp_path / "text", {"a.parquet": b"id,s\n1,a\n" * 20})
    with pytest.raises(puffin.BindError, match="not a Parquet file"):
        con.register("text_as_parquet", d)


def test_directory_without_files(con, tmp_path):
    (tmp_path / "none").mkdir()
    with pytest.raises(puffin.BindError, match="no files found"):
        con.register("none", str(tmp_path / "none"))


# -- files that disagree on types ------------------------------------------------------------------
DISAGREEING = {
    "int32+int64": (pa.table({"x": pa.array([1, 2], pa.int32())}), pa.table({"x": pa.array([3], pa.int64())})),
    "decimal(12,2)+decimal(15,2)": (
        pa.table({"x": pa.array([decimal.Decimal("1.25")], pa.decimal128(12, 2))}),
        pa.table({"x": pa.array([decimal.Decimal("123456789.50")], pa.decimal128(15, 2))})),
    "string+large_string": (pa.table({"x": pa.array(["a"], pa.string())}),
                            pa.table({"x": pa.array(["b"], pa.large_string())})),
    "string+string_view": (pa.table({"x": pa.array(["a"], pa.string())}),
                           pa.table({"x": pa.array(["b"], pa.string_view())})),
    "float+double": (pa.table({"x": pa.array([1.5], pa.float32())}), pa.table({"x": pa.array([2.5], pa.float64())})),
    "timestamp ms+us": (pa.table({"x": pa.array([1], pa.timestamp("ms"))}),
                        pa.table({"x": pa.array([2], pa.timestamp("us"))})),
    "column missing in one file": (pa.table({"x": [1], "y": ["a"]}), pa.table({"x": [2]})),
    "column only in a later file": (pa.table({"x": [1]}), pa.table({"y": ["b"], "x": [2]})),
}


@pytest.mark.parametrize("case", list(DISAGREEING))
def test_schema_is_duckdbs_union_by_name(tmp_path, case):
    first, second = DISAGREEING[case]
    d = _write(tmp_path / "u", {"a.parquet": first, "b.parquet": second})
    src = sources.from_path("u", d)
    assert _types(src.schema) == _duckdb_types(d)
    assert src.rows == first.num_rows + second.num_rows


@pytest.mark.parametrize("case", ["int32+int64", "decimal(12,2)+decimal(15,2)", "string+large_string"])
def test_disagreeing_files_read_as_one_table(con, tmp_path, case):
    first, second = DISAGREEING[case]
    d = _write(tmp_path / "one", {"a.parquet": first, "b.parquet": second})
    con.register("one", d)
    got = con.sql("SELECT * FROM one").arrow()
    assert _types(got.schema) == _duckdb_types(d)
    want = duckdb.connect().sql(f"SELECT * FROM read_parquet('{d}/*.parquet', union_by_name=true)").fetchall()
    assert sorted(got.to_pylist(), key=str) == sorted([{"x": r[0]} for r in want], key=str)
    assert con.sql("SELECT count(*) AS n FROM one").fetchall() == [(3 if case == "int32+int64" else 2,)]


def test_column_missing_in_one_file_reads_as_null(con, tmp_path):
    first, second = DISAGREEING["column missing in one file"]
    d = _write(tmp_path / "missing", {"a.parquet": first, "b.parquet": second})
    got = con.sql(f"SELECT x, y FROM '{d}/*.parquet' ORDER BY x").fetchall()
    assert got == [(1, "a"), (2, None)]


def test_types_without_a_common_type_name_the_column_and_files(con, tmp_path):
    d = _write(tmp_path / "clash", {"a.parquet": _good(), "b.parquet": pa.table({"id": ["x"], "s": ["c"]})})
    with pytest.raises(puffin.BindError) as info:
        con.register("clash", d)
    message = str(info.value)
    assert "'id'" in message and "int32" in message and "string" in message
    assert os.path.join(d, "a.parquet") in message and os.path.join(d, "b.parquet") in message


def test_empty_file_among_others(con, tmp_path):
    d = _write(tmp_path / "empty", {"a.parquet": _good(), "b.parquet": _good().slice(0, 0), "c.parquet": _good()})
    assert sources.from_path("e", d).schema.equals(_good().schema)
    con.register("with_empty", d)
    assert con.sql("SELECT count(*) AS n, sum(id) AS s FROM with_empty").fetchall() == [(4, 6)]


def test_only_empty_files(con, tmp_path):
    d = _write(tmp_path / "all_empty", {"a.parquet": _good().slice(0, 0)})
    con.register("all_empty", d)
    assert con.sql("SELECT count(*) AS n FROM all_empty").fetchall() == [(0,)]
