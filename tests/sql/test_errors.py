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
