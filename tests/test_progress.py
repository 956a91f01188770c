"""Progress of a running query: the callback sees stages and tasks finish and the rows and bytes
the scans read; the bar draws them on stderr once a query has run past its delay."""

from __future__ import annotations

import puffin
from puffin.demo import register_tpch
from puffin.progress import Bar, Progress
from tests.conftest import tpch_query


def test_callback_counts_tasks_rows_and_bytes(local_ray, tpch_dir, oracle):
    con = puffin.connect(target_partitions=3)
    register_tpch(con, tpch_dir)
    seen: list[Progress] = []
    con.sql(tpch_query(3), progress=seen.append)
    last = seen[-1]
    assert last.done and last.stages > 1 and last.stages_done == last.stages and last.tasks_done == last.tasks
    assert [p.tasks_done for p in seen] == sorted(p.tasks_done for p in seen)  # never goes back
    assert not any(p.done for p in seen[:-1])
    # Q3 scans customer, orders and lineitem: lineitem is split between tasks, each row read
    # once; small tables are read whole by every task that joins them, and count each time
    lineitem = oracle.sql("SELECT count(*) FROM lineitem").fetchall()[0][0]
    assert last.rows > lineitem and last.bytes > 0
    assert "tasks" in last.describe() and "rows" in last.describe() and "scanned" in last.describe()


def test_in_process_query_reports_once_done(local_ray, tpch_dir):
    con = puffin.connect()
    register_tpch(con, tpch_dir)
    seen: list[Progress] = []
    con.sql("SELECT count(*) FROM lineitem", progress=seen.append)
    assert seen[-1].done and seen[-1].tasks == seen[-1].tasks_done == 1 and seen[-1].rows > 0


def test_bar_draws_on_stderr_after_its_delay(local_ray, tpch_dir, capsys):
    con = puffin.connect(target_partitions=3)
    register_tpch(con, tpch_dir)
    with Bar(True, force_terminal=True, delay_s=0.0) as bar:
        con.sql(tpch_query(5), progress=bar)
    err = capsys.readouterr().err
    assert "Running query" in err and "tasks" in err
    with Bar(True, force_terminal=True, delay_s=60.0) as bar:  # a quick query prints nothing
        con.sql("SELECT 1", progress=bar)
    assert capsys.readouterr().err == ""
    con.sql("SELECT 1", progress=False)  # and off means off
    assert capsys.readouterr().err == ""
