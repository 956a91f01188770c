"""Results of a TPC-H run as JSON, a Markdown table and a PNG chart.

``results`` is the plain dict built by ``benchmarks.tpch``: ``runs`` (one entry per engine,
or per node count in a scaling run, in column order), ``queries`` ({"q01": {label: {...}}},
the warm runs), ``baseline`` (the label ratios are relative to), and from the interactive
phases (``benchmarks.interactive``), when they ran: ``cold`` (``engines`` and ``queries``
like ``runs`` and ``queries``, one ``seconds`` per query), ``first_query`` (per engine),
``planning`` (``statements`` and ``summary``) and ``goals``.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _gib(value: int | None) -> str:
    return "-" if not value else f"{value / 2**30:.2f} GiB"


def short_error(message: str, limit: int = 240) -> str:
    """One line for an error: its first line, and its last when it spans several (remote
    tracebacks from Ray or the JVM end with the real cause)."""
    message = _ANSI.sub("", str(message))
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return ""
    text = lines[0] if len(lines) < 3 else f"{lines[0][:100]} … {lines[-1]}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cell(entry: dict | None, key: str = "median_s") -> str:
    """One query x engine cell: median (or cold: the one run's) seconds, or why there is none."""
    if not entry:
        return "-"
    if entry["status"] == "ok":
        return _secs(entry[key])
    if entry["status"] == "wrong":
        return f"wrong ({_secs(entry[key])})"
    return "error"


def markdown(results: dict) -> str:
    labels = list(results["runs"])
    base = results["baseline"]
    others = [label for label in labels if label != base]
    machine, config = results["machine"], results["config"]
    cold = results.get("cold")
    intro = (
        f"{machine['cpus']} CPUs, {machine['memory_gib']:.0f} GiB RAM (load average at start "
        f"{machine['loadavg_at_start'][0]:.1f}"
        + (f", at the end {machine['loadavg_at_end'][0]:.1f}" if machine.get("loadavg_at_end") else "")
        + f"). **warm**: median seconds of {config['reps']} timed "
        f"repetitions after {config['warmup']} warm-up, plan cache on"
        + (
            "; **cold**: seconds of the one run of each query, in order, in a fresh worker per engine "
            "(fresh session, Puffin's plan cache off)"
            if cold
            else ""
        )
        + f". Answers checked against DuckDB. `ratio` = engine time / {base} time (> 1: slower than {base})."
    )
    lines = [f"# TPC-H SF {results['sf']:g} — {results['title']}", "", intro, ""]
    lines += _goals(results)
    runs = results["runs"]
    cold_engines = cold["engines"] if cold else {}
    columns: list[tuple[str, str]] = []  # (label, "cold" | "warm")
    for label in labels:
        if label in cold_engines:
            columns.append((label, "cold"))
        columns.append((label, "warm"))
    ratio_columns = [(o, kind) for o in others for kind in ("cold", "warm") if (o, kind) in columns]
    header = [
        "query",
        *(f"{label} {kind}" if cold else label for label, kind in columns),
        *(f"{o} {kind} ratio" if cold else f"{o} ratio" for o, kind in ratio_columns),
    ]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for qid, per_run in results["queries"].items():
        per_cold = cold["queries"].get(qid, {}) if cold else {}
        row = [qid]
        for label, kind in columns:
            row.append(cell(per_cold.get(label), "seconds") if kind == "cold" else cell(per_run.get(label)))
        for o, kind in ratio_columns:
            entry = per_cold.get(o, {}) if kind == "cold" else per_run.get(o, {})
            row.append(_ratio(entry.get("ratio")))
        lines.append("| " + " | ".join(row) + " |")

    def record(label: str, kind: str) -> dict:
        return cold_engines.get(label, {}) if kind == "cold" else runs[label]

    def counts(r: dict) -> str:
        return f"{r.get('ok', 0)} / {r.get('wrong', 0)} / {r.get('error', 0)}"

    summary = {
        "total (ok queries)": ([_secs(record(lb, k).get("total_s")) for lb, k in columns], "ratio_total"),
        "queries ok / wrong / error": ([counts(record(lb, k)) for lb, k in columns], None),
        "peak RSS (process tree)": ([_gib(record(lb, k).get("peak_rss_bytes")) for lb, k in columns], None),
        "warm `SELECT count(*) FROM nation`": (
            [_ms(runs[lb].get("probe_median_s")) if k == "warm" else "" for lb, k in columns],
            None,
        ),
        "import + connect": ([_secs(record(lb, k).get("connect_s")) for lb, k in columns], None),
        "load (register tables)": ([_secs(record(lb, k).get("load_s")) for lb, k in columns], None),
    }
    for name, (values, ratio_key) in summary.items():
        extra = [_ratio(record(o, k).get(ratio_key)) if ratio_key else "" for o, k in ratio_columns]
        lines.append("| " + " | ".join([f"**{name}**", *values, *extra]) + " |")
    lines += ["", "Total ratios use only the queries both engines answered correctly.", ""]
    lines += _first_query(results) + _planning(results)
    lines += _versions(results) + _explain_table(results) + _problems(results)
    return "\n".join(lines) + "\n"


def _goals(results: dict) -> list[str]:
    goals = results.get("goals")
    if not goals:
        return []
    lines = ["## Goals (issue 8, Puffin against DuckDB)", "", "| goal | measured | met |", "|---|---|---|"]
    for g in goals:
        met = "not measured" if g["met"] is None else ("**met**" if g["met"] else "**not met**")
        lines.append(f"| {g['goal']} | {g['measured']} | {met} |")
    return lines + [""]


def _first_query(results: dict) -> list[str]:
    first = results.get("first_query")
    if not first:
        return []
    lines = [
        "## First query after connect",
        "",
        (
            "Each engine alone in a fresh worker process: import + `connect()`, register the tables, then "
            "`SELECT count(*) FROM nation` at once; `overhead` = that first run − the warm probe median "
            "(from the warm runs). The cold session's first TPC-H query against its warm median likewise."
        ),
        "",
        (
            "| engine | import + connect | register | first probe | warm probe | overhead "
            "| first TPC-H query (cold) | warm | overhead |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, e in first.items():
        qid = e.get("first_query_id", "")
        row = [
            label,
            _secs(e.get("connect_s")),
            _secs(e.get("register_s")),
            _ms(e.get("first_s")),
            _ms(e.get("warm_s")),
            _plus(e.get("overhead_s")),
            f"{qid} {_secs(e.get('first_query_s'))}" if qid else "-",
            _secs(e.get("first_query_warm_s")),
            _plus(e.get("first_query_overhead_s")),
        ]
        lines.append("| " + " | ".join(row) + " |")
    errors = [f"- {label}: {_one_line(e['error'])}" for label, e in first.items() if e.get("error")]
    return lines + ([""] + errors if errors else []) + [""]


def _plus(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3f} s"


def _planning(results: dict) -> list[str]:
    planning = results.get("planning") or {}
    summary = planning.get("summary")
    if not summary:
        return []
    measures = []  # (label, measure, heading)
    for label, groups in summary.items():
        if any("planning_ms" in g for g in groups.values()):
            measures.append((label, "planning_ms", f"{label} planning (reported)"))
        measures.append((label, "explain_ms", f"{label} EXPLAIN wall"))
    lines = [
        "## Planning time (ms, p50 / p95 / max)",
        "",
        (
            "Plain `EXPLAIN` of each statement, plan cache off, median of "
            f"{results['config'].get('plan_runs', '?')} runs per statement: Puffin's own `planning: X ms` "
            "and the wall time of the whole EXPLAIN; DuckDB's EXPLAIN wall time. TPC-H: the queries of "
            "this run; SQL corpora: tests/sql/features.sql, subqueries.sql, grouping.sql over their "
            "in-memory tables. Single-table: statements reading at most one table."
        ),
        "",
        "| statements | n | " + " | ".join(h for _, _, h in measures) + " |",
        "|" + "---|" * (len(measures) + 2),
    ]
    first_label = next(iter(summary))
    for group, row in summary[first_label].items():
        cells = [group, str(row["n"])]
        for label, measure, _ in measures:
            stats = summary[label].get(group, {}).get(measure)
            cells.append("-" if not stats else f"{stats['p50']:.1f} / {stats['p95']:.1f} / {stats['max']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    failed = []
    for label, groups in summary.items():
        n = groups.get("all", {}).get("errors", 0)
        if n:
            examples = [
                f"{st['id']}: {st['engines'][label]['error']}"
                for st in planning["statements"]
                if "error" in st["engines"].get(label, {})
            ][:3]
            failed.append(
                f"- {label}: {n} statements failed to plan (not in the figures), e.g. "
                + "; ".join(_one_line(e) for e in examples)
            )
    slow = [
        f"- slowest for {label}: {groups['all']['slowest']}"
        for label, groups in summary.items()
        if groups.get("all", {}).get("slowest")
    ]
    return lines + [""] + failed + slow + [""]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f} ms"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _versions(results: dict) -> list[str]:
    lines = ["## Engines", ""]
    for label, run in results["runs"].items():
        note = f" — {run['note']}" if run.get("note") else ""
        lines.append(f"- **{label}**: {run.get('engine')} {run.get('version') or '?'}{note}")
    return lines + [""]


def _explain_table(results: dict) -> list[str]:
    labels = [label for label, run in results["runs"].items() if run.get("explain")]
    if not labels:
        return []
    lines = [
        "## Stages from EXPLAIN ANALYZE (stages / tasks / bytes shuffled)",
        "",
        "| query | " + " | ".join(labels) + " |",
        "|" + "---|" * (len(labels) + 1),
    ]
    for qid, per_run in results["queries"].items():
        cells = []
        for label in labels:
            ex = (per_run.get(label) or {}).get("explain")
            if not ex or "error" in ex:
                cells.append("-" if not ex else "error")
            else:
                cells.append(f"{ex['stages']} / {ex['tasks']} / {_bytes(ex['bytes_shuffled'])}")
        lines.append(f"| {qid} | " + " | ".join(cells) + " |")
    return lines + [""]


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _problems(results: dict) -> list[str]:
    lines = []
    for label, run in results["runs"].items():
        if run.get("startup_error"):
            lines.append(f"- **{label}** did not start: {_one_line(run['startup_error'])} (log: {run.get('log', '?')})")
    cold = results.get("cold") or {}
    for label, run in cold.get("engines", {}).items():
        if run.get("startup_error"):
            lines.append(f"- **{label}** (cold) did not start: {_one_line(run['startup_error'])}")
    phases = [("", results["queries"])] + ([(" (cold)", cold["queries"])] if cold.get("queries") else [])
    for phase, queries in phases:
        for qid, per_run in queries.items():
            for label, entry in per_run.items():
                if entry["status"] == "wrong":
                    lines.append(f"- {qid} **{label}**{phase} wrong answer: {_one_line(entry['mismatch'])}")
                elif entry["status"] == "error" and entry["error"] != "engine did not start":
                    lines.append(f"- {qid} **{label}**{phase} error: {_one_line(entry['error'])}")
    return ["## Errors and wrong answers", "", *lines, ""] if lines else []


def _one_line(text: str) -> str:
    return short_error(text, limit=400).replace("|", "\\|")


def chart(results: dict, path: Path) -> bool:
    """Grouped bars per query (log scale); False when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(results["runs"])
    qids = list(results["queries"])
    cold = results.get("cold") or {}
    series = []  # (label, entries by query, time key, cold?)
    for label in labels:
        if label in cold.get("engines", {}):
            series.append((label, {q: cold["queries"].get(q, {}).get(label) for q in qids}, "seconds", True))
        series.append((label, {q: results["queries"][q].get(label) for q in qids}, "median_s", False))
    colours = {label: f"C{i}" for i, label in enumerate(labels)}
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(min(18.0, max(7.0, 0.16 * len(qids) * len(series) + 2)), 5))
    for i, (label, entries, key, is_cold) in enumerate(series):
        offset = (i - (len(series) - 1) / 2) * width
        xs, ys = [], []
        for q, qid in enumerate(qids):
            entry = entries[qid]
            if entry and entry["status"] == "ok":
                xs.append(q + offset)
                ys.append(entry[key])
        style = {"hatch": "//", "alpha": 0.45, "edgecolor": colours[label]} if is_cold else {}
        name = f"{label} cold" if is_cold else (f"{label} warm" if cold else label)
        ax.bar(xs, ys, width=width, label=name, color=colours[label], **style)
        for q, qid in enumerate(qids):  # mark missing bars so they are not read as "fast"
            entry = entries[qid]
            if entry and entry["status"] != "ok":
                ax.annotate(
                    "x" if entry["status"] == "error" else "!",
                    (q + offset, 0),
                    ha="center",
                    xycoords=("data", "axes fraction"),
                    xytext=(0, 2),
                    textcoords="offset points",
                    fontsize=9,
                    fontweight="bold",
                    color="red",
                )
    ax.set_yscale("log")
    ax.set_xticks(range(len(qids)), [q.upper() for q in qids], fontsize=8)
    ax.set_ylabel("seconds (log scale): warm median" + (", cold single run (hatched)" if cold else ""))
    ax.set_title(f"TPC-H SF {results['sf']:g} — {results['title']}  (x = error, ! = wrong answer)", fontsize=10)
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write(results: dict, out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md"]
    paths[0].write_text(json.dumps(results, indent=1, default=_json_default) + "\n")
    paths[1].write_text(markdown(results))
    if chart(results, out_dir / f"{stem}.png"):
        paths.append(out_dir / f"{stem}.png")
    else:
        print("[report] matplotlib not installed: no chart (pip install matplotlib)")
    return paths


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)
