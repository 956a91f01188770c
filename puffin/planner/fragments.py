"""Stages -> fragments: the plain data each task receives (see ``puffin.operators.fragment``)."""

from __future__ import annotations

import dataclasses

from puffin.operators.fragment import Fragment
from puffin.operators.scan import ScanRead
from puffin.planner.physical import Stage
from puffin.planner.predicates import arrow_backend, translate
from puffin.planner.sqlgen import input_name


def stage_sql(stage: Stage) -> str:
    return stage.sql


def _extra(scan):
    """Per-scan reader state: for Iceberg, the snapshot's metadata and the pushed row filter."""
    ice = scan.source.iceberg
    if ice is None:
        return None
    from puffin.iceberg import to_row_filter

    return dataclasses.replace(ice.read, row_filter=to_row_filter(scan.filters, scan.column_map))


def _arrow_filter(scan):
    """For files pyarrow reads (object stores, CSV, JSON): the filter it can evaluate."""
    src = scan.source
    if src.kind in ("arrow", "iceberg") or (src.kind == "parquet" and src.storage is None):
        return None
    return translate(scan.filters, scan.column_map, arrow_backend())


def make_fragments(stage: Stage, cpus: int, memory_per_cpu: int | None) -> list[Fragment]:
    sql = stage_sql(stage)
    extras = [_extra(s.scan) for s in stage.scans]
    filters = [_arrow_filter(s.scan) for s in stage.scans]
    threads = max(1, cpus // max(1, stage.tasks))
    out = []
    for task in range(stage.tasks):
        scans = tuple(
            ScanRead(
                s.name,
                s.scan.source.kind,
                s.scan.source.schema,
                s.scan.columns,
                s.per_task[task],
                s.scan.source.options,
                s.scan.source.source_id,
                s.scan.source.storage,
                extra,
                row_filter,
            )
            for s, extra, row_filter in zip(stage.scans, extras, filters)
        )
        out.append(
            Fragment(
                stage_id=stage.id,
                task=task,
                sql=sql,
                scans=scans,
                inputs=tuple(input_name(x.stage_id) for x in stage.inputs),
                output_mode=stage.output.mode,
                output_keys=stage.output.keys,
                output_partitions=stage.output.partitions,
                threads=threads,
                memory_limit=memory_per_cpu * threads if memory_per_cpu else None,
                schema=stage.schema,
            )
        )
    return out
