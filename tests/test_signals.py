"""Ctrl-C belongs to the main thread: after a session ran queries in-process, every other thread
of the process (DuckDB's pools, OpenBLAS's, Puffin's own) blocks SIGINT, so the kernel can only
hand it to the main thread (the shell's prompt waits in readline with no timeout and would not
see a SIGINT another thread took until the next key)."""

from __future__ import annotations

import os
import subprocess
import sys

CODE = """
import os, puffin
con = puffin.connect()
con.register("t", {path!r})
con.sql("SELECT count(*), sum(x) FROM t").fetchall()
con.sql("SELECT 42").render()
for tid in sorted(os.listdir("/proc/self/task")):
    status = dict(line.split(":", 1) for line in open(f"/proc/self/task/{{tid}}/status").read().splitlines() if ":" in line)
    print(tid == str(os.getpid()), int(status["SigBlk"].strip(), 16) & 2 != 0, status["Name"].strip())
"""


def test_only_the_main_thread_takes_sigint(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"x": list(range(100_000))}), path)
    env = {**os.environ, "PUFFIN_PRESTART": "0"}
    out = subprocess.run([sys.executable, "-c", CODE.format(path=str(path))], capture_output=True, text=True,
                         timeout=120, env=env, check=True).stdout.split("\n")
    threads = [line.split(" ", 2) for line in out if line]
    assert len(threads) > 5, threads  # DuckDB's pools are there
    main = [t for t in threads if t[0] == "True"]
    others = [t for t in threads if t[0] == "False"]
    assert main == [["True", "False", main[0][2]]]  # the main thread takes SIGINT
    assert all(t[1] == "True" for t in others), [t for t in others if t[1] != "True"]
