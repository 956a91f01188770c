"""TPC-H benchmark of Puffin against peer engines.

    python -m benchmarks.tpch --sf 1 --engines puffin,duckdb,spark,daft
    python -m benchmarks.tpch --sf 0.1 --engines duckdb,polars --queries 1,3,5 --reps 5
    python -m benchmarks.tpch --sf 1 --scaling            # Puffin on 1, 2 and 4 Ray nodes
    python -m benchmarks.tpch --sf 0.1 --engines puffin,duckdb --lambda   # + puffin-s3, puffin-lambda

A comparison run has three phases, each engine in worker processes of its own:

1. cold: per engine, a fresh worker (Puffin's plan cache off) runs every query once, in
   order, then times the planning (EXPLAIN) of the TPC-H queries and the SQL corpora;
2. first query: per engine, a fresh worker runs SELECT count(*) FROM nation right after
   connect + register, then again until warm;
3. warm: every engine in its own long-lived worker, all loaded before the first query;
   query-major: for each query, a warm-up on every engine, then the timed repetitions
   interleaved across engines; then the warm probe (SELECT count(*) FROM nation).

Answers are checked against DuckDB; ratios are to DuckDB when it runs. See
benchmarks/README.md for the outputs.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pyarrow as pa

from benchmarks import interactive, report
from benchmarks.datagen import ensure_data, ensure_plain_copy, sf_label
from benchmarks.engine_run import Config, EngineRun
from benchmarks.engines import ENGINES
from benchmarks.explain import summarise
from benchmarks.report import short_error
from benchmarks.workers import MemorySampler, wait_until_idle
from puffin.testing import compare, has_order_by
from puffin.tpch import QUERIES_DIR

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_QUERIES = Path(QUERIES_DIR)  # shipped with the package: a clone needs nothing beside it
PROBE_SQL = interactive.PROBE_SQL
PROBE_WARMUP = interactive.PROBE_WARMUP


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.tpch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sf", type=float, default=1.0, help="scale factor (default 1)")
    parser.add_argument(
        "--engines", default="puffin,duckdb,spark,daft", help=f"comma-separated, from {','.join(ENGINES)}"
    )
    parser.add_argument("--queries", default="all", help="e.g. 1,3,5 (default all 22)")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    parser.add_argument(
        "--out", type=Path, default=BENCH_DIR / "results", help="output directory (default benchmarks/results)"
    )
    parser.add_argument(
        "--baseline",
        help="label ratios are relative to (default duckdb when it runs, else puffin, else the first engine)",
    )
    parser.add_argument(
        "--timeout", type=float, default=300, help="seconds one request (load, one query run) may take (default 300)"
    )
    parser.add_argument(
        "--probe-runs", type=int, default=20, help=f"timed runs of {PROBE_SQL!r} per engine (default 20; 0 skips)"
    )
    parser.add_argument(
        "--no-cold",
        action="store_true",
        help="skip the cold runs (a fresh worker per engine, plan cache off, each query once)",
    )
    parser.add_argument(
        "--no-first-query",
        action="store_true",
        help=f"skip the first-query latency ({PROBE_SQL!r} in a fresh worker right after connect)",
    )
    parser.add_argument(
        "--no-planning", action="store_true", help="skip the planning table (EXPLAIN of TPC-H and the SQL corpora)"
    )
    parser.add_argument(
        "--plan-runs", type=int, default=3, help="EXPLAINs per statement for the planning table, median (default 3)"
    )
    parser.add_argument(
        "--keep-decimals",
        action="store_true",
        help="give Daft the decimal columns too (by default its copy of the "
        "data has float64, as in Daft's own TPC-H setup)",
    )
    parser.add_argument("--spark-memory", help="spark.driver.memory (default: a third of RAM, at most 8g)")
    parser.add_argument(
        "--queries-dir",
        type=Path,
        default=DEFAULT_QUERIES,
        help=f"directory of qNN.sql files (default {DEFAULT_QUERIES})",
    )
    parser.add_argument(
        "--lambda",
        dest="lambda_offload",
        nargs="?",
        const="always",
        choices=("always", "auto"),
        help="add puffin-s3 (the tables on a local S3 server) and puffin-lambda (the same, scan fragments "
        "offloaded to the local Lambda service; offload=always unless 'auto' is given)",
    )
    scaling = parser.add_argument_group("scaling run (Puffin only)")
    scaling.add_argument(
        "--scaling", action="store_true", help="run Puffin on several Ray nodes instead of comparing engines"
    )
    scaling.add_argument("--nodes", default="1,2,4", help="node counts (default 1,2,4)")
    scaling.add_argument(
        "--cpus",
        type=int,
        default=max(4, os.cpu_count() or 1),
        help="logical CPUs split across the nodes (default max(4, cores))",
    )
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    if args.plan_runs < 1:
        parser.error("--plan-runs must be at least 1")
    unknown = set(args.engines.split(",")) - set(ENGINES)
    if unknown and not args.scaling:
        parser.error(f"unknown engines {sorted(unknown)}; choose from {','.join(ENGINES)}")
    return args


def load_queries(directory: Path, selection: str) -> dict[str, str]:
    numbers = range(1, 23) if selection == "all" else [int(n) for n in selection.split(",")]
    queries = {}
    for n in numbers:
        text = (directory / f"q{n:02d}.sql").read_text()
        queries[f"q{n:02d}"] = text.strip().rstrip(";").strip()
    return queries


def reference_answers(data_dir: Path, queries: dict[str, str]) -> dict[str, pa.Table]:
    """DuckDB's answers, computed in this process, untimed."""
    from benchmarks.engines.duckdb_engine import Engine

    start = time.perf_counter()
    engine = Engine()
    engine.load({p.name: str(p) for p in data_dir.iterdir() if p.is_dir()})
    answers = {qid: engine.run(sql) for qid, sql in queries.items()}
    engine.close()
    print(
        f"[ref] DuckDB reference answers for {len(queries)} queries in {time.perf_counter() - start:.1f} s", flush=True
    )
    return answers


def _ray_env(label: str) -> dict[str, str]:
    """Each Ray-based worker gets its own Ray temp dir (short: it holds unix sockets)."""
    return {"RAY_TMPDIR": f"/tmp/pbench-{os.getpid()}-{label}"}


def comparison_configs(args: argparse.Namespace, data_dir: Path) -> list[Config]:
    configs = []
    for name in args.engines.split(","):
        spec = ENGINES[name]
        config = Config(name, spec, data_dir)
        if spec.plain_strings:
            as_float = spec.decimals_as_float and not args.keep_decimals
            config.data_dir = ensure_plain_copy(data_dir, decimals_as_float=as_float)
            config.note = "reads a copy of the data with string_view columns as string" + (
                " and decimals as float64" if as_float else ""
            )
        if name == "spark":
            config.options = {"driver_memory": args.spark_memory} if args.spark_memory else {}
            config.note = "local[*]"
        if name in ("puffin", "daft"):
            config.env = _ray_env(name)
        if name == "daft":  # keep Ray 2.59 from writing a token into ~/.ray
            config.env["RAY_AUTH_MODE"] = "disabled"
            config.note += "; Ray runner"
        configs.append(config)
    if args.lambda_offload:
        for label, options, note, explain in (
            ("puffin-s3", {"s3_only": True}, "tables on a local S3 server (SeaweedFS), every fragment on Ray", False),
            (
                "puffin-lambda",
                {"lambda_offload": args.lambda_offload},
                f"tables on a local S3 server, scan fragments on the local Lambda service (offload={args.lambda_offload})",
                True,
            ),
        ):
            configs.append(
                Config(label, ENGINES["puffin"], data_dir, options=options, env=_ray_env(label), note=note, explain=explain)
            )
    return configs


def scaling_configs(args: argparse.Namespace, data_dir: Path) -> list[Config]:
    configs = []
    for n in (int(x) for x in args.nodes.split(",")):
        label = f"puffin-{n}node" + ("s" if n > 1 else "")
        configs.append(
            Config(
                label,
                ENGINES["puffin"],
                data_dir,
                options={"nodes": n, "cpus": args.cpus},
                env=_ray_env(label),
                explain=True,
                note=f"{n} Ray node{'s' if n > 1 else ''} sharing {args.cpus} logical CPUs",
            )
        )
    return configs


NOT_STARTED = "engine did not start"


def _error(message: str) -> dict:
    return {"status": "error", "error": message}


def run_query(
    runs: list[EngineRun],
    qid: str,
    sql: str,
    expected: pa.Table,
    args: argparse.Namespace,
    tmp: Path,
    sampler: MemorySampler,
) -> dict:
    """Warm-up on every engine, then the timed repetitions interleaved across engines."""
    entries: dict[str, dict] = {}
    active = []
    for run in runs:
        if not run.ensure_started():
            entries[run.label] = _error(NOT_STARTED)
            continue
        for _ in range(args.warmup):
            answer = run.call({"op": "run", "sql": sql, "result": None}, qid)
            if not answer["ok"]:
                entries[run.label] = _error(answer["error"])
                break
        else:
            active.append(run)
    times: dict[str, list[float]] = {run.label: [] for run in active}
    for rep in range(args.reps):
        for run in list(active):
            keep = str(tmp / f"{run.label}-{qid}.arrow") if rep == args.reps - 1 else None
            answer = run.call({"op": "run", "sql": sql, "result": keep}, qid)
            if answer["ok"]:
                times[run.label].append(answer["seconds"])
            else:
                entries[run.label] = _error(answer["error"])
                active.remove(run)
    for run in active:
        path = tmp / f"{run.label}-{qid}.arrow"
        with pa.OSFile(str(path)) as source:
            table = pa.ipc.open_file(source).read_all()
        path.unlink()
        try:
            mismatch = compare(table, expected, ordered=has_order_by(sql))
        except Exception as exc:  # noqa: BLE001 - an odd result type must not end the run
            mismatch = f"could not compare: {type(exc).__name__}: {exc}"
        entries[run.label] = {
            "status": "wrong" if mismatch else "ok",
            "mismatch": mismatch,
            "times_s": times[run.label],
            "median_s": statistics.median(times[run.label]),
            "rows": table.num_rows,
        }
    for run in runs:
        entry = entries[run.label]
        entry["peak_rss_bytes"] = sampler.peak_by_key.get((run.label, qid))
        if run.config.explain and entry["status"] != "error" and run.worker is not None:
            answer = run.call({"op": "explain", "sql": sql}, qid)
            entry["explain"] = (
                {**summarise(answer["text"]), "text": answer["text"]} if answer["ok"] else {"error": answer["error"]}
            )
    return entries


def _progress(qid: str, label: str, entry: dict) -> str:
    line = f"{qid}  {label:<14}"
    if entry["status"] == "error":
        return line + f"  error: {short_error(entry['error'])}"
    times = " ".join(f"{t:.3f}" for t in entry["times_s"])
    line += f"{entry['median_s']:9.3f} s  {entry['status']:<5}  [{times}]"
    if entry.get("peak_rss_bytes"):
        line += f"  rss {entry['peak_rss_bytes'] / 2**30:.2f} GiB"
    if entry["status"] == "wrong":
        line += f"  {entry['mismatch'][:120]}"
    if "explain" in entry and "error" not in entry["explain"]:
        ex = entry["explain"]
        line += f"  stages={ex['stages']} tasks={ex['tasks']} shuffled={ex['bytes_shuffled']}"
    return line


def probe(run: EngineRun, n: int) -> None:
    if n <= 0 or not run.ensure_started():
        return
    answer = run.call({"op": "probe", "sql": PROBE_SQL, "n": n + PROBE_WARMUP}, "probe")
    if answer["ok"]:
        runs = answer["seconds"][PROBE_WARMUP:]
        run.record.update(probe_runs_s=runs, probe_median_s=statistics.median(runs))
        print(
            f"probe {run.label:<14} {PROBE_SQL}: median {statistics.median(runs) * 1000:.1f} ms over {n} warm runs",
            flush=True,
        )
    else:
        run.record["probe_error"] = answer["error"]
        print(f"probe {run.label:<14} error: {short_error(answer['error'])}")


def summarise_runs(results: dict) -> None:
    summarise_times(results["queries"], results["runs"], results["baseline"], "median_s")


def summarise_times(queries: dict, records: dict, base: str, time_key: str) -> None:
    """Per engine: counts by status, the total of the queries answered correctly, and ratios to
    ``base`` over the queries both answered correctly (warm: ``median_s``, cold: ``seconds``)."""
    for label, record in records.items():
        entries = [q[label] for q in queries.values() if label in q]
        for status in ("ok", "wrong", "error"):
            record[status] = sum(e["status"] == status for e in entries)
        record["total_s"] = sum(e[time_key] for e in entries if e["status"] == "ok")
        both = [q for q in queries.values()
                if q.get(label, {}).get("status") == "ok" and q.get(base, {}).get("status") == "ok"]
        for q in both:
            q[label]["ratio"] = q[label][time_key] / q[base][time_key]
        base_total = sum(q[base][time_key] for q in both)
        if both and base_total > 0:
            record["ratio_total"] = sum(q[label][time_key] for q in both) / base_total
            record["ratio_total_queries"] = len(both)


def run_group(
    runs: list[EngineRun],
    queries: dict[str, str],
    reference: dict[str, pa.Table],
    args: argparse.Namespace,
    tmp: Path,
    sampler: MemorySampler,
    results: dict,
) -> None:
    """Engines that run side by side: start all, every query on each, probes, close."""
    print(f"[run] starting {', '.join(r.label for r in runs)} ...", flush=True)
    for run in runs:
        run.ensure_started()
    waited = wait_until_idle([run.worker for run in runs if run.worker is not None])
    results.setdefault("warm_settle_s", []).append(waited)
    print(f"[run] workers idle after {waited:.1f} s", flush=True)
    for qid, sql in queries.items():
        entries = run_query(runs, qid, sql, reference[qid], args, tmp, sampler)
        for run in runs:
            results["queries"][qid][run.label] = entries[run.label]
            print(_progress(qid, run.label, entries[run.label]), flush=True)
    for run in runs:
        probe(run, args.probe_runs)
    for run in runs:
        run.stop()


def interactive_phases(
    configs: list[Config],
    queries: dict[str, str],
    reference: dict[str, pa.Table],
    args: argparse.Namespace,
    tmp: Path,
    sampler: MemorySampler,
    log_dir: Path,
    data_dir: Path,
    results: dict,
) -> None:
    """Cold runs (with the planning table in the same workers), then first-query latency;
    each engine alone in a fresh worker. Results go into ``results`` as they come."""
    planning = None
    if not args.no_planning:
        tables = [p.name for p in data_dir.iterdir() if p.is_dir()]
        planning = results["planning"] = interactive.planning_statements(queries, tables)
    if not args.no_cold:
        results["cold"] = {"engines": {}, "queries": {qid: {} for qid in queries}}
        interactive.run_cold(configs, queries, reference, args, tmp, sampler, log_dir, planning, results["cold"])
    elif planning is not None:
        interactive.run_planning_only(configs, args, sampler, log_dir, planning)
    if not args.no_first_query:
        results["first_query"] = {}
        interactive.run_first_query(configs, args, sampler, log_dir, results["first_query"])


def summarise_interactive(results: dict) -> None:
    if results.get("cold"):
        summarise_times(results["cold"]["queries"], results["cold"]["engines"], results["baseline"], "seconds")
    interactive.finish_first_query(results)
    if results.get("planning"):
        interactive.summarise_planning(results["planning"])
    results["goals"] = interactive.goals(results)


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "memory_gib": psutil.virtual_memory().total / 2**30,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg_at_start": os.getloadavg(),
    }


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds through main's finally: workers are closed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    data_dir = ensure_data(args.sf)
    queries = load_queries(args.queries_dir, args.queries)
    reference = reference_answers(data_dir, queries)
    if args.scaling:
        configs = scaling_configs(args, data_dir)
        groups = [[c] for c in configs]  # one cluster at a time
    else:
        configs = comparison_configs(args, data_dir)
        groups = [configs]  # all engines loaded together, queries interleaved
    labels = [c.label for c in configs]
    baseline = args.baseline or next((b for b in ("duckdb", "puffin") if b in labels), labels[0])
    results = {
        "benchmark": "tpch",
        "sf": args.sf,
        "baseline": baseline,
        "title": "Puffin scaling over Ray nodes" if args.scaling else "engine comparison",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "runs": {label: {} for label in labels},
        "queries": {qid: {} for qid in queries},
        "interrupted": True,  # removed when every group has run
    }
    stem = f"tpch_sf{sf_label(args.sf)}" + ("_scaling" if args.scaling else "")
    sampler = MemorySampler()
    start = time.perf_counter()
    runs: list[EngineRun] = []
    log_dir = args.out / "logs" / stem
    try:
        with tempfile.TemporaryDirectory(prefix="puffin-tpch-") as tmp:
            if not args.scaling:
                interactive_phases(configs, queries, reference, args, Path(tmp), sampler, log_dir, data_dir, results)
            for group in groups:
                print(f"[warm] {', '.join(c.label for c in group)}: warm-up + timed runs, plan cache on", flush=True)
                runs = [EngineRun(c, results["runs"][c.label], log_dir, args.timeout, sampler) for c in group]
                run_group(runs, queries, reference, args, Path(tmp), sampler, results)
        results.pop("interrupted")
    finally:
        for run in runs:
            run.stop(kill=True)
        sampler.stop()
        for label, record in results["runs"].items():
            record["peak_rss_bytes"] = sampler.peak_by_engine.get(label)
        results["duration_s"] = time.perf_counter() - start
        results["machine"]["loadavg_at_end"] = os.getloadavg()  # other work on the machine skews timings
        if results.get("interrupted"):
            results["title"] += " (interrupted: partial results)"
        summarise_runs(results)
        summarise_interactive(results)
        print()
        print(report.markdown(results))
        print("wrote " + ", ".join(str(p) for p in report.write(results, args.out, stem)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
