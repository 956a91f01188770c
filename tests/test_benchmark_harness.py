"""The benchmark harness end to end on a tiny run: data, both engines, answer checks, report."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_harness_runs_engines_side_by_side_and_writes_the_report(tmp_path):
    cmd = [sys.executable, "-m", "benchmarks.tpch", "--sf", "0.01", "--engines", "puffin,duckdb",
           "--queries", "1,6", "--reps", "1", "--warmup", "0", "--probe-runs", "2", "--out", str(tmp_path)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    report = json.loads((tmp_path / "tpch_sf0.01.json").read_text())
    for q in ("q01", "q06"):
        for engine in ("puffin", "duckdb"):
            assert report["queries"][q][engine]["status"] == "ok", report["queries"][q][engine]
        assert report["queries"][q]["duckdb"]["ratio"] > 0
    table = (tmp_path / "tpch_sf0.01.md").read_text()
    assert "| q01 |" in table and "SELECT count(*) FROM nation" in table
    assert (tmp_path / "tpch_sf0.01.png").stat().st_size > 1000
