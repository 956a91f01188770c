"""Per-stage statistics scraped from Puffin's EXPLAIN ANALYZE text.

Puffin prints one header line per stage, root first, then the stage's operator tree::

    Stage 1 [4 tasks] -> hash(l_orderkey, 4)  | rows in=60175 out=15000 bytes out=1.2MB task time total=80.1ms max=25.3ms workers=2
      Aggregate(partial) ...
    Stage 0 [1 task] -> result  | rows in=... out=5 bytes out=133B ...

The parser is lenient about the details (``tasks=N`` or ``[N tasks]``, ``bytes out=`` or
``bytes=``, units B/KB/MB/GB with or without ``i``) so that small format changes do not lose
the numbers; the raw text is kept in the results anyway. Bytes shuffled by a query are the
output bytes of every stage except the root (``-> result``, else the first listed), whose
output goes to the client.
"""

from __future__ import annotations

import re

_HEADER = re.compile(r"^\s*stage\s+#?(\d+)\b(.*)$", re.IGNORECASE)
_TASKS = re.compile(r"\[(\d+)\s+tasks?\]|\btasks?\s*[=:]\s*(\d+)|\b(\d+)\s+tasks?\b", re.IGNORECASE)
_ROWS_OUT = re.compile(r"\brows\b[^|]*?\bout\s*[=:]\s*(\d+)|\brows\s*[=:]\s*(\d+)", re.IGNORECASE)
_BYTES = re.compile(r"\bbytes(?:[ _]out)?\s*[=:]\s*([\d.]+)\s*([KMGT]i?B|B)?", re.IGNORECASE)
_WORKERS = re.compile(r"\bworkers\s*[=:]\s*(\d+)", re.IGNORECASE)
_TIME_MS = re.compile(r"\btotal\s*[=:]\s*([\d.]+)\s*ms", re.IGNORECASE)
_OUTPUT = re.compile(r"->\s*([^|]*)")
_UNITS = {
    "B": 1,
    "KB": 2**10,
    "MB": 2**20,
    "GB": 2**30,
    "TB": 2**40,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def _first_int(match: re.Match | None) -> int | None:
    if match is None:
        return None
    return int(next(g for g in match.groups() if g is not None))


def parse_stages(text: str) -> list[dict]:
    """One dict per stage header line, in the order printed."""
    stages = []
    for line in text.splitlines():
        header = _HEADER.match(line)
        if not header:
            continue
        rest = header.group(2)
        size = _BYTES.search(rest)
        output = _OUTPUT.search(rest)
        time_ms = _TIME_MS.search(rest)
        workers = _WORKERS.search(rest)
        stages.append(
            {
                "stage": int(header.group(1)),
                "output": output.group(1).strip() if output else None,
                "tasks": _first_int(_TASKS.search(rest)),
                "rows_out": _first_int(_ROWS_OUT.search(rest)),
                "bytes_out": (int(float(size.group(1)) * _UNITS[(size.group(2) or "B").upper()]) if size else None),
                "task_time_ms": float(time_ms.group(1)) if time_ms else None,
                "workers": int(workers.group(1)) if workers else None,
            }
        )
    return stages


def summarise(text: str) -> dict:
    """Stage count, total tasks and bytes shuffled of one EXPLAIN ANALYZE text."""
    stages = parse_stages(text)
    roots = [i for i, s in enumerate(stages) if (s["output"] or "").startswith("result")]
    root = roots[0] if roots else 0
    shuffled = sum(s["bytes_out"] or 0 for i, s in enumerate(stages) if i != root)
    return {
        "stages": len(stages),
        "tasks": sum(s["tasks"] or 0 for s in stages),
        "bytes_shuffled": shuffled,
        "per_stage": stages,
    }
