"""EXPLAIN text: stages, their exchanges and operator trees; with ANALYZE, what each did."""

from __future__ import annotations

from collections.abc import Iterable

from puffin.planner.logical import (
    Aggregate,
    Exchange,
    Filter,
    Join,
    Limit,
    Native,
    Plan,
    Project,
    Scan,
    SetOp,
    Sort,
    Values,
    Window,
    describe_expr,
)
from puffin.planner.physical import Stage


def _short(text: str, n: int = 110) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def node_line(p: Plan, scans: dict[int, str]) -> str:
    if isinstance(p, Scan):
        f = f" filters=[{_short(' AND '.join(describe_expr(x) for x in p.filters), 80)}]" if p.filters else ""
        how = scans.get(id(p), "")
        return f"Scan {p.source.name} AS {p.alias} [{', '.join(p.columns)}]{f} {how}".rstrip()
    if isinstance(p, Exchange):
        return f"Exchange <- stage {p.stage_id} ({p.mode}{'(' + ', '.join(p.keys) + ')' if p.keys else ''})"
    if isinstance(p, Filter):
        return f"Filter {_short(describe_expr(p.condition))}"
    if isinstance(p, Project):
        return f"Project {_short(', '.join(n for n, _ in p.exprs))}"
    if isinstance(p, Join):
        cond = f" ON {_short(describe_expr(p.condition))}" if p.condition is not None else ""
        return f"Join {p.kind}{cond}"
    if isinstance(p, Aggregate):
        keys = ", ".join(n for n, _ in p.keys)
        aggs = ", ".join(describe_expr(e) for _, e in p.aggs)
        return f"Aggregate({p.phase}) keys=[{_short(keys, 60)}] aggs=[{_short(aggs, 80)}]"
    if isinstance(p, Window):
        return f"Window {_short(', '.join(describe_expr(e) for _, e in p.windows))}"
    if isinstance(p, Sort):
        return f"Sort {_short(', '.join(describe_expr(k) for k in p.keys))}"
    if isinstance(p, Limit):
        return f"Limit {p.limit} offset {p.offset}"
    if isinstance(p, SetOp):
        return f"{p.kind.upper()}{'' if p.distinct else ' ALL'}"
    if isinstance(p, Native) and not p.fallback:
        return f"Whole statement in one DuckDB task ({p.reason})"
    if isinstance(p, Native):
        return f"Fallback: the whole statement in one DuckDB task ({_short(p.reason, 90)})"
    if isinstance(p, Values):
        return f"Values {_short(p.sql, 60)}"
    return type(p).__name__


def tree(p: Plan, scans: dict[int, str], depth: int = 0) -> Iterable[str]:
    yield "  " * depth + node_line(p, scans)
    for c in p.children():
        yield from tree(c, scans, depth + 1)


def fmt_bytes(n: float) -> str:
    """Bytes as EXPLAIN ANALYZE prints them (also the Lambda offload's lines)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}TB"


def explain(stages: list[Stage], metrics: dict[int, list] | None = None, planning_ms: float | None = None,
            notes: dict[int, list[str]] | None = None) -> str:
    """``notes``: lines printed under a stage's head (the Lambda offload: decision, how it ran)."""
    lines = []
    for st in reversed(stages):
        scans = {
            id(s.scan): f"({sum(len(u) for u in s.per_task) if s.split else len(s.per_task[0])} units, "
            f"{'split' if s.split else 'read whole by each task'}{'; ' + s.note if s.note else ''})"
            for s in st.scans
        }
        head = f"Stage {st.id} [{st.tasks} task{'s' if st.tasks != 1 else ''}] -> {st.output.describe()}"
        if metrics is not None and st.id in metrics:
            ms = metrics[st.id]
            rows_out = sum(m.rows_out for m in ms)
            bytes_out = sum(m.bytes_out for m in ms)
            rows_in = sum(m.rows_in for m in ms)
            slowest = max(m.seconds for m in ms)
            total = sum(m.seconds for m in ms)
            head += (f"  | rows in={rows_in} out={rows_out} bytes out={fmt_bytes(bytes_out)}"
                     f" task time total={total * 1000:.1f}ms max={slowest * 1000:.1f}ms"
                     f" workers={len({m.pid for m in ms})}")
        lines.append(head)
        lines.extend("  " + ln for ln in (notes or {}).get(st.id, ()))
        lines.extend("  " + ln for ln in tree(st.plan, scans))
    if planning_ms is not None:
        lines.append(f"planning: {planning_ms:.1f}ms")
    return "\n".join(lines)
