"""What each write statement is routed to, and the statements refused by name; no Spark needed."""

from __future__ import annotations

import pytest

import puffin
from puffin.errors import NotSupportedError, PuffinError


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    d = tmp_path_factory.mktemp("stmts")
    return puffin.connect(catalogs={"lake": {"type": "sql", "uri": f"sqlite:///{d}/c.db", "warehouse": f"file://{d}/wh"}},
                          prestart=False)


def test_explain_of_a_spark_statement_shows_the_spark_sql_and_its_staged_inputs(con):
    import pyarrow as pa

    con.register("updates", pa.table({"id": [1], "v": ["x"]}))
    text = con.sql("EXPLAIN MERGE INTO lake.db.t t USING updates u ON t.id = u.id "
                   "WHEN MATCHED THEN UPDATE SET v = u.v").render()
    assert text.startswith("Spark SQL (local): MERGE INTO lake.db.t AS t USING puffin_input_0 AS u")
    assert "input puffin_input_0: computed by Puffin from updates" in text


@pytest.mark.parametrize(("sql", "message"), [
    ("INSERT OR REPLACE INTO lake.db.t VALUES (1)", "INSERT OR REPLACE"),
    ("DELETE FROM lake.db.t WHERE id = 1 RETURNING id", "DELETE ... RETURNING"),
    ("CREATE VIEW lake.db.v AS SELECT 1", "CREATE VIEW"),
    ("COPY (SELECT 1) TO 'a.parquet', 'b.parquet'", None),
])
def test_forms_no_writer_runs_are_named(con, sql, message):
    with pytest.raises(PuffinError) as err:
        con.sql(sql)
    if message:
        assert isinstance(err.value, NotSupportedError) and message in str(err.value)


def test_an_unknown_engine_is_named(con):
    with pytest.raises(PuffinError, match="unknown engine 'presto'; engines: puffin, spark"):
        con.sql("SELECT 1", engine="presto")


@pytest.mark.parametrize(("text", "catalog", "procedure", "spark"), [
    ("CALL lake.system.remove_orphan_files(table => 'db.t');", "lake", "remove_orphan_files",
     "CALL lake.system.remove_orphan_files(table => 'db.t')"),
    ("-- keep one\n call System . expire_snapshots('db.t', TIMESTAMP '2026-01-01 00:00:00', 1) ;\n", None,
     "expire_snapshots", "CALL System . expire_snapshots('db.t', TIMESTAMP '2026-01-01 00:00:00', 1)"),
])
def test_call_is_read_as_written(text, catalog, procedure, spark):
    from puffin.writes.statement import is_write, parse_call

    assert is_write(text)
    call = parse_call(text)
    assert (call.catalog, call.procedure, call.text) == (catalog, procedure, spark)
    assert parse_call("SELECT 'CALL x()'") is None


def test_call_without_a_catalog_says_to_configure_one():
    from puffin.errors import BindError

    with pytest.raises(BindError, match=r"configure one: connect\(catalogs="):
        puffin.connect(prestart=False).sql("CALL system.expire_snapshots(table => 'db.t')")
