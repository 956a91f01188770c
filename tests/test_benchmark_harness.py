"""The benchmark harness end to end on a tiny run: data, both engines, answer checks, the cold
runs, first-query latency, the planning table, and the report."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_harness_runs_engines_side_by_side_and_writes_the_report(tmp_path):
    cmd = [sys.executable, "-m", "benchmarks.tpch", "--sf", "0.01", "--engines", "puffin,duckdb",
           "--queries", "1,6", "--reps", "1", "--warmup", "0", "--probe-runs", "2", "--plan-runs", "1",
           "--out", str(tmp_path)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    report = json.loads((tmp_path / "tpch_sf0.01.json").read_text())
    assert report["baseline"] == "duckdb"  # ratios are to DuckDB when it runs
    engines = ("puffin", "duckdb")
    rows = {"q01": 4, "q06": 1}  # TPC-H Q1 has one row per (returnflag, linestatus), Q6 one total

    # warm: warm-up + timed runs in long-lived workers
    for q in ("q01", "q06"):
        entry = report["queries"][q]
        for engine in engines:
            assert entry[engine]["status"] == "ok", entry[engine]
            assert entry[engine]["rows"] == rows[q], entry[engine]
            assert len(entry[engine]["times_s"]) == 1 and entry[engine]["median_s"] == entry[engine]["times_s"][0]
        assert entry["duckdb"]["ratio"] == 1
        assert math.isclose(entry["puffin"]["ratio"], entry["puffin"]["median_s"] / entry["duckdb"]["median_s"])
    for engine in engines:
        run = report["runs"][engine]
        assert run["peak_rss_bytes"] > 0 and run["probe_median_s"] > 0 and run["connect_s"] > 0

    # cold: a fresh worker per engine, each query once
    cold = report["cold"]
    for q in ("q01", "q06"):
        for engine in engines:
            entry = cold["queries"][q][engine]
            assert entry["status"] == "ok", entry
            assert entry["rows"] == rows[q] and entry["seconds"] > 0
        assert math.isclose(cold["queries"][q]["puffin"]["ratio"],
                            cold["queries"][q]["puffin"]["seconds"] / cold["queries"][q]["duckdb"]["seconds"])
    for engine in engines:
        record = cold["engines"][engine]
        assert record["ok"] == 2 and record["error"] == 0 and record["peak_rss_bytes"] > 0
        assert math.isclose(record["total_s"], sum(cold["queries"][q][engine]["seconds"] for q in rows))
        assert record["connect_s"] > 0 and record["load_s"] >= 0
    assert math.isclose(cold["engines"]["puffin"]["ratio_total"],
                        cold["engines"]["puffin"]["total_s"] / cold["engines"]["duckdb"]["total_s"])

    # first query after connect
    for engine in engines:
        first = report["first_query"][engine]
        assert "error" not in first, first
        for key in ("connect_s", "register_s", "first_s", "warm_s", "first_query_s", "first_query_warm_s"):
            assert first[key] is not None and first[key] >= 0, (key, first)
        assert math.isclose(first["overhead_s"], first["first_s"] - first["warm_s"])
        assert first["first_query_id"] == "q01"
        assert math.isclose(first["first_query_overhead_s"], first["first_query_s"] - first["first_query_warm_s"])

    # planning: both TPC-H queries and every corpus statement planned by both engines
    planning = report["planning"]
    statements = planning["statements"]
    assert [st["id"] for st in statements if st["corpus"] == "tpch"] == ["q01", "q06"]
    assert {st["corpus"] for st in statements} == {"tpch", "features", "subqueries", "grouping"}
    assert next(st for st in statements if st["id"] == "q01")["tables"] == 1
    for engine in engines:
        summary = planning["summary"][engine]
        assert summary["all"]["errors"] == 0, [st["engines"][engine] for st in statements
                                               if "error" in st["engines"][engine]][:3]
        assert summary["all"]["n"] == len(statements)
        assert summary["single-table (<= 1 table)"]["n"] > 0 and summary["multi-table"]["n"] > 0
        measures = ("planning_ms", "explain_ms") if engine == "puffin" else ("explain_ms",)
        for group in ("TPC-H", "SQL corpora", "single-table (<= 1 table)", "multi-table", "all"):
            for measure in measures:
                stats = summary[group][measure]
                assert 0 < stats["p50"] <= stats["p95"] <= stats["max"], (engine, group, measure, stats)

    goals = {g["goal"]: g for g in report["goals"]}
    assert "cold total <= 2x DuckDB" in goals and "TPC-H planning p50 <= 15 ms" in goals
    assert all(g["met"] in (True, False) for g in goals.values()), goals

    table = (tmp_path / "tpch_sf0.01.md").read_text()
    assert "| q01 |" in table and "SELECT count(*) FROM nation" in table
    for heading in ("puffin cold", "puffin warm ratio", "## Goals", "## First query after connect",
                    "## Planning time", "**peak RSS (process tree)**"):
        assert heading in table, heading
    assert (tmp_path / "tpch_sf0.01.png").stat().st_size > 1000


def test_harness_options_for_the_interactive_phases():
    from benchmarks.interactive import count_tables, percentile
    from benchmarks.tpch import parse_args

    args = parse_args(["--no-cold", "--no-first-query", "--no-planning", "--plan-runs", "5"])
    assert args.no_cold and args.no_first_query and args.no_planning and args.plan_runs == 5
    defaults = parse_args([])
    assert not (defaults.no_cold or defaults.no_first_query or defaults.no_planning)
    assert percentile([3.0, 1.0, 2.0, 10.0], 0.5) == 2.0 and percentile([3.0, 1.0, 2.0, 10.0], 0.95) == 10.0
    known = {"emp", "dept", "t"}
    assert count_tables("SELECT * FROM emp e JOIN emp f ON e.id = f.id", known) == 1
    assert count_tables("WITH t AS (SELECT 1) SELECT * FROM t, dept, range(3)", known) == 1
    assert count_tables("SELECT * FROM emp WHERE dept_id IN (SELECT id FROM dept)", known) == 2
