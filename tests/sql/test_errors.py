"""Bad SQL gets a clear PuffinError (errors.test), and the session keeps working after it."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

import puffin

HERE = os.path.dirname(__file__)


def _cases():
    with open(os.path.join(HERE, "errors.test")) as f:
        blocks = f.read().split("\n\n")
    for block in blocks:
        lines = [ln for ln in block.strip().splitlines() if not ln.startswith("#")]
        if not lines or not lines[0].startswith("statement error"):
            continue
        kind = lines[0].split()[2]
        sep = lines.index("----")
        yield kind, "\n".join(lines[1:sep]), [ln for ln in lines[sep + 1:] if ln.strip()]


CASES = list(_cases())
# what a Puffin user must never read in a message: library internals and Puffin's generated SQL
INTERNALS = ("<class", "sqlglot", "<Token", "TokenType", "Required keyword", "__src_", "__one", "scan_0",
             "TEMP VIEW", "SET max_expression_depth", '"temp".main', "Traceback")


def _assert_clean(message: str) -> None:
    for marker in INTERNALS:
        assert marker not in message, f"{marker!r} in:\n{message}"


@pytest.fixture(scope="module")
def con(local_ray):
    c = puffin.connect(target_partitions=2)
    c.register("emp", pa.table({"id": [1, 2, 3], "name": ["a", "b", "c"], "salary": [10, 20, 30]}))
    c.register("dept", pa.table({"id": [1, 2], "dname": ["x", "y"]}))
    return c


@pytest.mark.parametrize("kind,sql,expected", CASES, ids=[f"e{i:02d}" for i in range(len(CASES))])
def test_error_is_clear_and_session_survives(con, kind, sql, expected):
    with pytest.raises(getattr(puffin, kind)) as info:
        con.sql(sql)
    message = str(info.value)
    assert isinstance(info.value, puffin.PuffinError)
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    _assert_clean(message)
    assert con.sql("SELECT sum(salary) AS s FROM emp").fetchall() == [(60,)]


def test_syntax_error_carries_position(con):
    with pytest.raises(puffin.SqlSyntaxError) as info:
        con.sql("SELECT name\nFROM emp\nWHERE salary >")
    assert info.value.line == 3


def test_error_inside_a_fragment_names_the_stage(con):
    # Passes type checking (VARCHAR -> INTEGER cast) but fails on the data, inside a task.
    with pytest.raises(puffin.ExecutionError) as info:
        con.sql("SELECT CAST(name AS INTEGER) AS n FROM emp")
    err = info.value
    assert err.stage_id is not None and f"stage {err.stage_id}" in str(err)
    assert "Conversion" in str(err) and "Traceback" in err.remote_traceback
    assert con.sql("SELECT count(*) AS n FROM emp").fetchall() == [(3,)]


def test_syntax_error_columns_are_the_typed_text(con):
    with pytest.raises(puffin.SqlSyntaxError) as info:
        con.sql("SELECT id, FROM emp WHERE")
    assert (info.value.line, info.value.column) == (1, 21)
    with pytest.raises(puffin.SqlSyntaxError) as info:  # a character of two UTF-8 bytes before
        con.sql("SELECT 'é' AS e FROM emp WHERE salary > > 3")
    assert (info.value.line, info.value.column) == (1, 41)
    long = "SELECT " + ", ".join(f"salary AS s{i}" for i in range(40)) + " FROM emp WHERE salary > > 3"
    with pytest.raises(puffin.SqlSyntaxError) as info:
        con.sql(long)
    assert info.value.column == long.index("> 3") + 1
    assert str(info.value).splitlines()[1].strip().startswith("...")  # long lines are shown around it


def test_other_dialects_keep_sqlglots_errors_in_plain_words(con):
    for sql, expected in [("SELECT id, FROM emp WHERE", "incomplete WHERE clause"),
                          ("SELECT name FROM", "Expected table name but got the end of the query"),
                          ("SELECT 1 +", "incomplete '+' expression"),
                          ("SELECT 'abc", "unterminated"),
                          ("SELECT", "SELECT clause without selection list")]:
        with pytest.raises(puffin.SqlSyntaxError) as info:
            con.sql(sql, dialect="snowflake")
        assert expected in str(info.value) and info.value.line == 1, str(info.value)
        _assert_clean(str(info.value))
    with pytest.raises(puffin.NotSupportedError, match="unknown SQL dialect 'duckbd'. Did you mean duckdb"):
        con.sql("SELECT 1", dialect="duckbd")


def test_query_that_is_not_a_string(con):
    for bad in (None, 42, b"SELECT 1"):
        with pytest.raises(puffin.PuffinError, match=f"query must be a string, got {type(bad).__name__}"):
            con.sql(bad)
    assert con.sql("SELECT count(*) AS n FROM emp").fetchall() == [(3,)]


def test_deep_nesting_runs_or_is_refused_by_name(con):
    deep = "SELECT " + "(" * 43 + "1" + ")" * 43 + " AS x"
    assert con.sql(deep).fetchall() == [(1,)]
    deep_col = "SELECT " + "(" * 60 + "salary" + ")" * 60 + " AS x FROM emp ORDER BY x"
    assert con.sql(deep_col).fetchall() == [(10,), (20,), (30,)]
    with pytest.raises(puffin.NotSupportedError, match="nested too deeply") as info:
        con.sql("SELECT " + "(" * 1001 + "1" + ")" * 1001)
    _assert_clean(str(info.value))
    with pytest.raises(puffin.NotSupportedError, match="nested too deeply"):  # no DuckDB check here
        con.sql("SELECT " + "(" * 5000 + "1" + ")" * 5000, dialect="mysql")
    assert con.sql("SELECT count(*) AS n FROM emp").fetchall() == [(3,)]


def test_nesting_deeper_than_the_planners_stack(con):
    sql = "SELECT " + "abs(" * 300 + "salary" + ")" * 300 + " AS x FROM emp ORDER BY x"
    assert con.sql(sql).fetchall() == [(10,), (20,), (30,)]
