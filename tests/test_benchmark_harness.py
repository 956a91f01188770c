"""The benchmark harness end to end on a tiny run: data, both engines, answer checks, report."""

from __future__ import annotations

import json
import math
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
    rows = {"q01": 4, "q06": 1}  # TPC-H Q1 has one row per (returnflag, linestatus), Q6 one total
    for q in ("q01", "q06"):
        entry = report["queries"][q]
        for engine in ("puffin", "duckdb"):
            assert entry[engine]["status"] == "ok", entry[engine]
            assert entry[engine]["rows"] == rows[q], entry[engine]
            assert len(entry[engine]["times_s"]) == 1 and entry[engine]["median_s"] == entry[engine]["times_s"][0]
        assert entry["puffin"]["ratio"] == 1  # puffin is the baseline
        assert math.isclose(entry["duckdb"]["ratio"], entry["duckdb"]["median_s"] / entry["puffin"]["median_s"])
    table = (tmp_path / "tpch_sf0.01.md").read_text()
    assert "| q01 |" in table and "SELECT count(*) FROM nation" in table
    assert (tmp_path / "tpch_sf0.01.png").stat().st_size > 1000
