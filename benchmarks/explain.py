"""Per-stage statistics scraped from Puffin's EXPLAIN ANALYZE text.

The format is Puffin's to choose; this parser only assumes that each stage starts on a line
naming ``stage <id>`` and that counters appear as ``key=value`` or ``key: value`` on that
line or the lines under it, e.g.::

    Stage 1 [HashPartition(l_orderkey, 8)] tasks=4 rows=60175 bytes=2.1 MiB time=0.21s

Recognised keys: ``tasks``; ``rows``; ``bytes`` (or ``shuffle_bytes``, ``bytes_shuffled``,
``output_bytes``...) with an optional unit (B, KB, KiB, MB, MiB, GB, GiB). The bytes a query
shuffled are the ``shuffle*`` bytes when the text reports them, else the output bytes of all
stages but the root, taken to be the first listed (plans print top-down), whose output goes
to the client. The raw text is always kept too.
"""

from __future__ import annotations

import re

_STAGE = re.compile(r"\bstage\s*[#:]?\s*(\d+)", re.IGNORECASE)
_TASKS = re.compile(r"\btasks?\s*[=:]\s*(\d+)|\b(\d+)\s+tasks\b", re.IGNORECASE)
_ROWS = re.compile(r"\b(?:output_)?rows\s*[=:]\s*([\d,_]+)", re.IGNORECASE)
_BYTES = re.compile(
    r"\b([a-z_]*bytes[a-z_]*)\s*[=:]\s*([\d.,_]+)\s*([KMGT]i?B|B)?\b", re.IGNORECASE
)
_UNITS = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def _number(text: str) -> float:
    return float(text.replace(",", "").replace("_", ""))


def parse_stages(text: str) -> list[dict]:
    stages: list[dict] = []
    for line in text.splitlines():
        match = _STAGE.search(line)
        if match:
            stages.append({"stage": int(match.group(1)), "tasks": None, "rows": None,
                           "bytes": None, "shuffle_bytes": None})
        if not stages:
            continue
        stage = stages[-1]
        if stage["tasks"] is None and (m := _TASKS.search(line)):
            stage["tasks"] = int(m.group(1) or m.group(2))
        if stage["rows"] is None and (m := _ROWS.search(line)):
            stage["rows"] = int(_number(m.group(1)))
        for key, value, unit in _BYTES.findall(line):
            amount = _number(value) * _UNITS[(unit or "B").upper()]
            field = "shuffle_bytes" if "shuffle" in key.lower() else "bytes"
            if stage[field] is None:
                stage[field] = int(amount)
    return stages


def summarise(text: str) -> dict:
    """Stage count, total tasks and bytes shuffled of one EXPLAIN ANALYZE text."""
    stages = parse_stages(text)
    if any(s["shuffle_bytes"] is not None for s in stages):
        shuffled = sum(s["shuffle_bytes"] or 0 for s in stages)
    else:
        shuffled = sum(s["bytes"] or 0 for s in stages[1:])
    return {"stages": len(stages),
            "tasks": sum(s["tasks"] or 0 for s in stages),
            "bytes_shuffled": shuffled,
            "per_stage": stages}
