"""Ray started in the background at connect() (``prestart``): a helper process brings up the
head while the first queries are planned and answered in-process, and everything Ray started
ends with the user's process; an embedded session over local data starts none until a plan
needs it. Each case runs in a fresh interpreter (Ray is process-global)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import psutil

SCRIPT = r"""
import json, os, sys, threading
import duckdb, pyarrow as pa, puffin
t = pa.table({"g": [i % 7 for i in range(1000)], "a": list(range(1000))})
oracle = duckdb.connect(); oracle.register("t", t)
con = puffin.connect(prestart=True)  # returns at once; Ray comes up beside the queries below
con.register("t", t)
starting = [th.name for th in threading.enumerate() if th.name == "puffin-runtime-start"]
small = "SELECT g, sum(a) AS s FROM t GROUP BY g ORDER BY g"
assert con.sql(small).arrow().equals(oracle.sql(small).to_arrow_table())
# queries from several threads on one connection, planned and run concurrently, some on Ray
big = puffin.connect(target_partitions=3, config={"broadcast_bytes": 0, "replicate_bytes": 0})
big.register("t", t)
queries = [small, "SELECT a.g, count(*) AS n FROM t a JOIN t b ON a.g = b.g GROUP BY a.g ORDER BY a.g",
           "SELECT count(DISTINCT a) AS d, max(a) AS m FROM t WHERE g > 2", "SELECT 42 AS x"]
errors = []
oracle_lock = threading.Lock()  # the oracle is one DuckDB connection: one call at a time
def worker(k):
    try:
        for i in range(6):
            q = queries[(k + i) % len(queries)]
            got = (big if i % 2 else con).sql(q).arrow()
            with oracle_lock:
                want = oracle.sql(q).to_arrow_table()
            assert got.equals(want), (q, got, want)
    except BaseException as e:
        errors.append(repr(e))
threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
for th in threads: th.start()
for th in threads: th.join()
assert not errors, errors
from puffin import launch
print(json.dumps({"starting": starting, "head": launch._head.pid if launch._head else None}))
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PUFFIN_PRESTART", None)  # the defaults, not the test suite's
    env.pop("RAY_ADDRESS", None)
    return env


def test_connect_starts_ray_in_the_background_and_it_ends_with_the_process():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300,
                          env=_env(), check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["starting"] == ["puffin-runtime-start"]  # connect() started it and returned
    head = out["head"]
    assert head is not None  # a helper process started the local head
    deadline = time.monotonic() + 30
    while psutil.pid_exists(head) and psutil.Process(head).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the Ray head outlived the process that started it"
        time.sleep(0.2)


def test_an_embedded_session_over_local_data_starts_no_ray_until_a_plan_needs_it():
    script = ("import sys, threading, puffin\n"
              "con = puffin.connect()\n"
              "assert con.sql('SELECT 1 AS x').fetchall() == [(1,)]\n"
              "assert 'ray' not in sys.modules\n"
              "assert not [t for t in threading.enumerate() if t.name == 'puffin-runtime-start']\n"
              "big = puffin.connect(target_partitions=2)  # distributed plans: Ray starts beside\n"
              "assert [t for t in threading.enumerate() if t.name == 'puffin-runtime-start']\n"
              "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env=_env(), check=False)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
