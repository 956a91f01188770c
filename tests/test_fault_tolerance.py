"""A Ray worker killed in the middle of a multi-stage query: Ray retries the fragment and the
answer is still right. The worker is killed with SIGKILL by the fragment's own process on its
first attempt (runtime.KILL_ONCE_ENV), which Ray sees as a worker crash, not an exception."""

from __future__ import annotations

import os

import puffin
from puffin.demo import register_tpch
from puffin.testing import assert_same_result
from tests.conftest import tpch_query


def test_killed_worker_mid_query_still_gives_the_right_answer(ray_with_fault, tpch_dir, oracle):
    con = puffin.connect(target_partitions=4, config={"broadcast_bytes": 0, "replicate_bytes": 0})
    register_tpch(con, tpch_dir)
    sql = tpch_query(3)
    plan = con.sql("EXPLAIN " + sql).render()
    assert plan.count("Stage") >= 3, plan  # stage 1 sits between a scan stage and the result
    got = con.sql(sql).arrow()
    assert os.path.exists(ray_with_fault), "the fault was never injected"
    assert_same_result(got, oracle.sql(sql).to_arrow_table(), ordered=True, label="q3 after a worker kill")
