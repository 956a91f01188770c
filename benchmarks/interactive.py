"""Interactive speed (issue 8): cold runs, first-query latency, planning time, and the goals.

Each of these gives every engine a fresh worker process of its own, one engine at a time
(nothing else of the benchmark runs meanwhile):

- **cold**: a fresh session (Puffin with ``plan_cache=False``), the tables registered, then
  every query exactly once, in order, answers checked; then, in the same worker, the
  planning measurements (plan cache still off).
- **first query**: a fresh session with the default settings, the tables registered, then
  ``SELECT count(*) FROM nation`` at once, and again until it is warm.
- **planning**: plain ``EXPLAIN`` of every TPC-H query and of every statement of the SQL
  corpora (tests/sql/features.sql, subqueries.sql, grouping.sql, over their own in-memory
  tables): Puffin's reported ``planning: X ms`` and the wall time of the EXPLAIN, DuckDB's
  EXPLAIN wall time. Only engines with a ``plan`` method (Puffin, DuckDB) take part.
"""

from __future__ import annotations

import dataclasses
import math
import re
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa

from benchmarks.engine_run import Config, EngineRun
from benchmarks.report import short_error
from benchmarks.workers import MemorySampler
from puffin.testing import compare, has_order_by

PROBE_SQL = "SELECT count(*) FROM nation"
PROBE_WARMUP = 3
PLANNING_ENGINES = ("puffin", "duckdb")
NOT_STARTED = "engine did not start"
_PLANNING_MS = re.compile(r"planning:\s*([0-9.]+)\s*ms")


def fresh_config(config: Config, suffix: str, plan_cache: bool = True) -> Config:
    """``config`` for a fresh worker of its own: its own label (log file, memory samples) and
    Ray temp dir; Puffin without its plan cache when ``plan_cache`` is False."""
    label = config.label + suffix
    options = dict(config.options)
    if config.spec.name == "puffin" and not plan_cache:
        options["plan_cache"] = False
    env = dict(config.env)
    if "RAY_TMPDIR" in env:
        env["RAY_TMPDIR"] += suffix
    return dataclasses.replace(config, label=label, options=options, env=env, explain=False)


@contextmanager
def _session(run: EngineRun) -> Iterator[EngineRun]:
    """Close ``run``'s worker when done; kill it when leaving on an exception (Ctrl-C, SIGTERM)."""
    try:
        yield run
    except BaseException:
        run.stop(kill=True)
        raise
    run.stop()


# -- cold -----------------------------------------------------------------------------------


def _cold_query(run: EngineRun, qid: str, sql: str, expected: pa.Table, tmp: Path) -> dict:
    if not run.ensure_started():
        return {"status": "error", "error": NOT_STARTED}
    path = tmp / f"{run.label}-{qid}.arrow"
    answer = run.call({"op": "run", "sql": sql, "result": str(path)}, qid)
    if not answer["ok"]:
        return {"status": "error", "error": answer["error"]}
    with pa.OSFile(str(path)) as source:
        table = pa.ipc.open_file(source).read_all()
    path.unlink()
    try:
        mismatch = compare(table, expected, ordered=has_order_by(sql))
    except Exception as exc:  # noqa: BLE001 - an odd result type must not end the run
        mismatch = f"could not compare: {type(exc).__name__}: {exc}"
    return {
        "status": "wrong" if mismatch else "ok",
        "mismatch": mismatch,
        "seconds": answer["seconds"],
        "rows": table.num_rows,
    }


def run_cold(
    configs: list[Config],
    queries: dict[str, str],
    reference: dict[str, pa.Table],
    args,
    tmp: Path,
    sampler: MemorySampler,
    log_dir: Path,
    planning: dict | None,
    cold: dict,
) -> None:
    """Every engine in turn: fresh worker, plan cache off, each query once in order; then the
    planning statements in the same worker when ``planning`` is given. ``cold`` (and
    ``planning``) are filled in place, so an interrupted run keeps what it measured."""
    cold.setdefault("engines", {})
    cold.setdefault("queries", {qid: {} for qid in queries})
    for config in configs:
        fresh = fresh_config(config, "-cold", plan_cache=False)
        record = cold["engines"][config.label] = {}
        run = EngineRun(fresh, record, log_dir, args.timeout, sampler)
        print(f"[cold] {config.label}: fresh worker, plan cache off, each query once", flush=True)
        with _session(run):
            run.ensure_started()
            for qid, sql in queries.items():
                entry = _cold_query(run, qid, sql, reference[qid], tmp)
                entry["peak_rss_bytes"] = sampler.peak_by_key.get((fresh.label, qid))
                cold["queries"][qid][config.label] = entry
                print(_cold_line(qid, config.label, entry), flush=True)
            if planning is not None and config.spec.name in PLANNING_ENGINES:
                run_planning(run, config.label, planning, args.plan_runs)
        peaks = [sampler.peak_by_key.get((fresh.label, key)) for key in ("load", *queries)]
        record["peak_rss_bytes"] = max((p for p in peaks if p), default=None)


def _cold_line(qid: str, label: str, entry: dict) -> str:
    line = f"{qid}  {label:<14} cold"
    if entry["status"] == "error":
        return line + f"  error: {short_error(entry['error'])}"
    line += f" {entry['seconds']:9.3f} s  {entry['status']:<5}"
    if entry.get("peak_rss_bytes"):
        line += f"  rss {entry['peak_rss_bytes'] / 2**30:.2f} GiB"
    if entry["status"] == "wrong":
        line += f"  {entry['mismatch'][:120]}"
    return line


# -- first query ----------------------------------------------------------------------------


def run_first_query(configs: list[Config], args, sampler: MemorySampler, log_dir: Path, first: dict) -> None:
    """Every engine in turn: fresh worker (default settings), connect + register, then the
    probe at once and again until warm; into ``first``, per engine. Overheads are filled in
    later by ``finish_first_query``."""
    warm_runs = max(5, args.probe_runs)
    for config in configs:
        fresh = fresh_config(config, "-first")
        record: dict = {}
        run = EngineRun(fresh, record, log_dir, args.timeout, sampler)
        print(f"[first] {config.label}: fresh worker, {PROBE_SQL} right after register", flush=True)
        entry = first[config.label] = {"sql": PROBE_SQL}
        with _session(run):
            if not run.ensure_started():
                entry["error"] = record.get("startup_error", NOT_STARTED)
                continue
            entry.update(connect_s=record.get("connect_s"), register_s=record.get("load_s"))
            answer = run.call({"op": "probe", "sql": PROBE_SQL, "n": 1 + PROBE_WARMUP + warm_runs}, "first")
            if not answer["ok"]:
                entry["error"] = answer["error"]
                continue
            seconds = answer["seconds"]
            entry.update(
                first_s=seconds[0],
                session_warm_runs_s=seconds[1 + PROBE_WARMUP :],
                session_warm_median_s=statistics.median(seconds[1 + PROBE_WARMUP :]),
            )
        entry["peak_rss_bytes"] = sampler.peak_by_engine.get(fresh.label)
        print(
            f"[first] {config.label}: connect {entry['connect_s'] or 0:.3f} s, register {entry['register_s'] or 0:.3f} s, "
            f"first probe {entry['first_s'] * 1000:.1f} ms, then {entry['session_warm_median_s'] * 1000:.1f} ms",
            flush=True,
        )


def finish_first_query(results: dict) -> None:
    """Overheads: the first probe against the warm phase's probe median (the same query on a
    warmed-up engine), and the cold session's first TPC-H query against its warm median."""
    cold = results.get("cold")
    if "first_query" not in results and not cold:
        return
    first = results.setdefault("first_query", {})
    qids = list(results["queries"])
    for label in results["runs"]:
        entry = first.setdefault(label, {})
        warm_probe = results["runs"].get(label, {}).get("probe_median_s")
        if warm_probe is None:
            warm_probe = entry.get("session_warm_median_s")
        entry["warm_s"] = warm_probe
        if entry.get("first_s") is not None and warm_probe is not None:
            entry["overhead_s"] = entry["first_s"] - warm_probe
        if cold and qids:
            qid = qids[0]
            c = cold["queries"][qid].get(label, {})
            w = results["queries"][qid].get(label, {})
            engine = cold["engines"].get(label, {})
            entry["first_query_id"] = qid
            entry["first_query_connect_s"] = engine.get("connect_s")
            entry["first_query_register_s"] = engine.get("load_s")
            if c.get("status") == "ok":
                entry["first_query_s"] = c["seconds"]
            if w.get("status") == "ok":
                entry["first_query_warm_s"] = w["median_s"]
            if c.get("status") == "ok" and w.get("status") == "ok":
                entry["first_query_overhead_s"] = c["seconds"] - w["median_s"]


# -- planning -------------------------------------------------------------------------------


def planning_statements(queries: dict[str, str], tpch_tables: list[str]) -> dict:
    """The statements whose planning is timed: the selected TPC-H queries and the corpora,
    each with the number of distinct tables it reads (CTE names and table functions aside)."""
    from tests.sql.test_corpora import corpus_tables, statements
    from tests.sql.test_features import _statements as feature_statements

    sql_dir = Path(__file__).resolve().parent.parent / "tests" / "sql"
    items = [("tpch", qid, sql) for qid, sql in queries.items()]
    items += [("features", f"features-{i:02d}", sql) for i, sql in enumerate(feature_statements())]
    for corpus in ("subqueries", "grouping"):
        items += [
            (corpus, f"{corpus}-{i:02d}", sql) for i, sql in enumerate(statements(str(sql_dir / f"{corpus}.sql")))
        ]
    known = {t.lower() for t in tpch_tables} | {t.lower() for t in corpus_tables()}
    return {
        "statements": [
            {"corpus": corpus, "id": sid, "sql": sql, "tables": count_tables(sql, known), "engines": {}}
            for corpus, sid, sql in items
        ]
    }


def count_tables(sql: str, known: set[str]) -> int | None:
    """Distinct registered tables ``sql`` reads; None when sqlglot cannot parse it."""
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except Exception:  # noqa: BLE001 - an unparsable statement is simply not classified
        return None
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    names = {t.name.lower() for t in tree.find_all(exp.Table) if t.name}
    return len((names - ctes) & known)


def run_planning(run: EngineRun, label: str, planning: dict, n: int) -> None:
    """EXPLAIN every statement ``n`` times in ``run``'s worker (which must plan anew each
    time): the median wall time, and for Puffin the median of its reported planning ms.
    A worker that dies is restarted and given the corpus tables again."""
    done = failed = 0
    registered = None  # the worker the corpus tables were registered in, or the error
    for st in planning["statements"]:
        if not run.ensure_started():
            st["engines"][label] = {"error": NOT_STARTED}
            failed += 1
            continue
        if registered is None or (registered is not run.worker and not isinstance(registered, str)):
            answer = run.call({"op": "register_corpus"}, "planning", timeout=max(run.timeout, 120))
            registered = run.worker if answer["ok"] else "corpus tables not registered: " + short_error(answer["error"])
            if isinstance(registered, str):
                print(f"[plan] {label}: {registered}", flush=True)
        if st["corpus"] != "tpch" and isinstance(registered, str):
            st["engines"][label] = {"error": registered}
            failed += 1
            continue
        reply = run.call({"op": "plan", "sql": st["sql"], "n": n}, "planning")
        if not reply["ok"]:
            st["engines"][label] = {"error": short_error(reply["error"])}
            failed += 1
            continue
        entry = {"explain_ms": statistics.median(reply["seconds"]) * 1000}
        reported = [float(m.group(1)) for text in reply["texts"] for m in [_PLANNING_MS.search(text)] if m]
        if reported:
            entry["planning_ms"] = statistics.median(reported)
        st["engines"][label] = entry
        done += 1
    print(f"[plan] {label}: {done} statements planned ({n} EXPLAINs each), {failed} failed", flush=True)


def run_planning_only(configs: list[Config], args, sampler: MemorySampler, log_dir: Path, planning: dict) -> None:
    """The planning table without the cold runs (``--no-cold``): a fresh worker per engine,
    plan cache off."""
    for config in configs:
        if config.spec.name not in PLANNING_ENGINES:
            continue
        fresh = fresh_config(config, "-plan", plan_cache=False)
        run = EngineRun(fresh, {}, log_dir, args.timeout, sampler)
        print(f"[plan] {config.label}: fresh worker, plan cache off", flush=True)
        with _session(run):
            # one query first, untimed, as in the cold worker: Puffin's Ray is up, not starting
            # beside the planning being timed
            tpch = [st["sql"] for st in planning["statements"] if st["corpus"] == "tpch"]
            if tpch and run.ensure_started():
                run.call({"op": "run", "sql": tpch[0], "result": None}, "planning")
            run_planning(run, config.label, planning, args.plan_runs)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: a value of the list, monotone in ``q``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


PLANNING_GROUPS = {
    "TPC-H": lambda st: st["corpus"] == "tpch",
    "SQL corpora": lambda st: st["corpus"] != "tpch",
    "single-table (<= 1 table)": lambda st: st["tables"] is not None and st["tables"] <= 1,
    "multi-table": lambda st: st["tables"] is not None and st["tables"] > 1,
    "all": lambda st: True,
}


def summarise_planning(planning: dict) -> None:
    """p50 / p95 / max per group, per engine and measure (``planning_ms``, ``explain_ms``)."""
    labels = list(dict.fromkeys(label for st in planning["statements"] for label in st["engines"]))
    summary: dict = {}
    for label in labels:
        per_label = summary[label] = {}
        for group, member in PLANNING_GROUPS.items():
            sts = [st for st in planning["statements"] if member(st) and label in st["engines"]]
            row = per_label[group] = {"n": len(sts), "errors": sum("error" in st["engines"][label] for st in sts)}
            for measure in ("planning_ms", "explain_ms"):
                values = [st["engines"][label][measure] for st in sts if measure in st["engines"][label]]
                if values:
                    row[measure] = {
                        "p50": percentile(values, 0.5),
                        "p95": percentile(values, 0.95),
                        "max": max(values),
                        "n": len(values),
                    }
            slowest = max(
                (st for st in sts if "explain_ms" in st["engines"][label]),
                key=lambda st: st["engines"][label].get("planning_ms", st["engines"][label]["explain_ms"]),
                default=None,
            )
            if slowest is not None:
                row["slowest"] = slowest["id"]
    planning["summary"] = summary


# -- goals ----------------------------------------------------------------------------------


def goals(results: dict, subject: str = "puffin", bar: str = "duckdb") -> list[dict]:
    """Issue 8's goals for ``subject`` against ``bar``, each with the figure measured and
    whether it is met (None: not measured in this run)."""
    runs = results["runs"]
    if subject not in runs or bar not in runs:
        return []
    out: list[dict] = []

    def add(goal: str, measured: str, met: bool | None) -> None:
        out.append({"goal": goal, "measured": measured, "met": met})

    queries = results["queries"]
    n = len(queries)

    def complete(entries: list[dict]) -> bool:
        return len(entries) == n and all(e.get("status") == "ok" for e in entries)

    cold = results.get("cold")
    if cold:
        rec = cold["engines"].get(subject, {})
        ratio = rec.get("ratio_total")
        ok = complete([q.get(subject, {}) for q in cold["queries"].values()])
        add(
            "cold total <= 2x DuckDB",
            _x(ratio) + ("" if ok else f" ({rec.get('ok', 0)}/{n} queries ok)"),
            None if ratio is None else (ratio <= 2 and ok),
        )
    ratio = runs[subject].get("ratio_total")
    ok = complete([q.get(subject, {}) for q in queries.values()])
    add(
        "warm total <= 1.5x DuckDB",
        _x(ratio) + ("" if ok else f" ({runs[subject].get('ok', 0)}/{n} queries ok)"),
        None if ratio is None else (ratio <= 1.5 and ok),
    )
    ratios = {qid: q[subject]["ratio"] for qid, q in queries.items() if "ratio" in q.get(subject, {})}
    if ratios:
        worst = max(ratios, key=ratios.get)
        add(
            "no warm query > 2.5x DuckDB",
            f"worst {worst} {ratios[worst]:.2f}x" + ("" if ok else "; some queries not ok"),
            ratios[worst] <= 2.5 and ok,
        )
    probe = runs[subject].get("probe_median_s")
    if probe is not None:
        add("trivial query warm <= 5 ms", f"{probe * 1000:.1f} ms", probe <= 0.005)
    first = (results.get("first_query") or {}).get(subject, {})
    if "overhead_s" in first:
        add(
            "first query <= 1 s more than warm (`SELECT count(*) FROM nation`)",
            f"{first['overhead_s']:+.3f} s",
            first["overhead_s"] <= 1,
        )
    if "first_query_overhead_s" in first:
        add(
            f"first query <= 1 s more than warm ({first['first_query_id']}, cold session)",
            f"{first['first_query_overhead_s']:+.3f} s",
            first["first_query_overhead_s"] <= 1,
        )
    summary = (results.get("planning") or {}).get("summary", {}).get(subject)
    if summary:
        for group, limit, text in (
            ("single-table (<= 1 table)", 5, "single-table planning p50 <= 5 ms"),
            ("TPC-H", 15, "TPC-H planning p50 <= 15 ms"),
        ):
            stats = summary.get(group, {}).get("planning_ms")
            if stats:
                add(text, f"{stats['p50']:.1f} ms (n={stats['n']})", stats["p50"] <= limit)
        stats = summary.get("all", {}).get("planning_ms")
        if stats:
            errors = summary["all"]["errors"]
            add(
                "no statement plans in > 1 s",
                f"max {stats['max']:.1f} ms ({summary['all'].get('slowest')})"
                + (f"; {errors} statements failed to plan" if errors else ""),
                stats["max"] <= 1000,
            )
    return out


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"
