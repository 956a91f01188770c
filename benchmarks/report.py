"""Results of a TPC-H run as JSON, a Markdown table and a PNG chart.

``results`` is the plain dict built by ``benchmarks.tpch``: ``runs`` (one entry per engine,
or per node count in a scaling run, in column order), ``queries`` ({"q01": {label: {...}}})
and ``baseline`` (the label ratios are relative to).
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


def cell(entry: dict | None) -> str:
    """One query x engine cell: median seconds, or why there is none."""
    if entry is None:
        return "-"
    if entry["status"] == "ok":
        return _secs(entry["median_s"])
    if entry["status"] == "wrong":
        return f"wrong ({_secs(entry['median_s'])})"
    return "error"


def markdown(results: dict) -> str:
    labels = list(results["runs"])
    base = results["baseline"]
    others = [label for label in labels if label != base]
    machine, config = results["machine"], results["config"]
    intro = (
        f"{machine['cpus']} CPUs, {machine['memory_gib']:.0f} GiB RAM (load average at start "
        f"{machine['loadavg_at_start'][0]:.1f}), {config['reps']} timed repetitions after "
        f"{config['warmup']} warm-up; median seconds per query; answers checked against DuckDB. "
        f"`ratio` = engine time / {base} time (> 1: slower than {base})."
    )
    lines = [f"# TPC-H SF {results['sf']:g} — {results['title']}", "", intro, ""]
    header = ["query", *labels, *(f"{o} ratio" for o in others)]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for qid, per_run in results["queries"].items():
        row = [qid, *(cell(per_run.get(label)) for label in labels)]
        row += [_ratio(per_run.get(o, {}).get("ratio")) for o in others]
        lines.append("| " + " | ".join(row) + " |")
    runs = results["runs"]
    summary = {
        "total (ok queries)": [_secs(runs[label].get("total_s")) for label in labels],
        "queries ok / wrong / error": [
            f"{runs[label]['ok']} / {runs[label]['wrong']} / {runs[label]['error']}" for label in labels
        ],
        "peak RSS (process tree)": [_gib(runs[label].get("peak_rss_bytes")) for label in labels],
        "warm `SELECT count(*) FROM nation`": [_ms(runs[label].get("probe_median_s")) for label in labels],
        "load (register tables)": [_secs(runs[label].get("load_s")) for label in labels],
    }
    for name, values in summary.items():
        extra = [_ratio(runs[o].get("ratio_total")) if name.startswith("total") else "" for o in others]
        lines.append("| " + " | ".join([f"**{name}**", *values, *extra]) + " |")
    lines += ["", "Total ratios use only the queries both engines answered correctly.", ""]
    lines += _versions(results) + _explain_table(results) + _problems(results)
    return "\n".join(lines) + "\n"


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
    for qid, per_run in results["queries"].items():
        for label, entry in per_run.items():
            if entry["status"] == "wrong":
                lines.append(f"- {qid} **{label}** wrong answer: {_one_line(entry['mismatch'])}")
            elif entry["status"] == "error" and entry["error"] != "engine did not start":
                lines.append(f"- {qid} **{label}** error: {_one_line(entry['error'])}")
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
    width = 0.8 / max(1, len(labels))
    fig, ax = plt.subplots(figsize=(min(16.0, max(7.0, 0.16 * len(qids) * len(labels) + 2)), 5))
    for i, label in enumerate(labels):
        xs, ys = [], []
        for q, qid in enumerate(qids):
            entry = results["queries"][qid].get(label)
            if entry and entry["status"] == "ok":
                xs.append(q + (i - (len(labels) - 1) / 2) * width)
                ys.append(entry["median_s"])
        ax.bar(xs, ys, width=width, label=label)
        for q, qid in enumerate(qids):  # mark missing bars so they are not read as "fast"
            entry = results["queries"][qid].get(label)
            if entry and entry["status"] != "ok":
                x = q + (i - (len(labels) - 1) / 2) * width
                ax.annotate(
                    "x" if entry["status"] == "error" else "!",
                    (x, 0),
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
    ax.set_ylabel("median seconds (log scale)")
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
