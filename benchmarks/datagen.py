"""TPC-H Parquet data made once per scale factor with ``tpchgen-cli`` and cached.

Layout under ``benchmarks/data/sf{sf}/``: one directory per table holding ``*.parquet``;
lineitem and orders are split into several files (``--parts``), the other tables are one
file each. ``sf{sf}-plain/`` is the same data with ``string_view`` columns rewritten as plain
``string`` (Daft cannot read string_view), and ``sf{sf}-plain-float/`` also has its
decimals as float64, made only when an engine asks for them.
A ``_SUCCESS`` file marks a finished directory (generation: ``puffin.demo.generate_tpch``); the
copies go to a temporary sibling renamed into place, so an interrupted run leaves no half-made
cache.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

from puffin.demo import generate_tpch

DATA_ROOT = Path(__file__).resolve().parent / "data"


def sf_label(sf: float) -> str:
    return f"{sf:g}"


def parts_for(sf: float) -> int:
    """Files per split table: at least 4, about 4 per scale-factor unit."""
    return max(4, math.ceil(4 * sf))


def ensure_data(sf: float, root: Path = DATA_ROOT) -> Path:
    """Return the directory of TPC-H data at ``sf``, generating it on first use."""
    final = root / f"sf{sf_label(sf)}"
    if not (final / "_SUCCESS").exists():
        print(f"[data] generating TPC-H sf={sf_label(sf)} into {final} ...", flush=True)
        start = time.perf_counter()
        root.mkdir(parents=True, exist_ok=True)
        generate_tpch(str(final), sf, parts=parts_for(sf), row_group_bytes=None)
        print(f"[data] done in {time.perf_counter() - start:.1f} s", flush=True)
    return final


def _plain_type(type_, decimals_as_float: bool):
    import pyarrow as pa

    if pa.types.is_string_view(type_):
        return pa.string()
    if decimals_as_float and pa.types.is_decimal(type_):
        return pa.float64()
    return type_


def ensure_plain_copy(src: Path, decimals_as_float: bool = False) -> Path:
    """Copy of ``src`` with string_view columns cast to string (and decimals to float64
    when asked), file for file and row group for row group."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    final = src.with_name(src.name + ("-plain-float" if decimals_as_float else "-plain"))
    if (final / "_SUCCESS").exists():
        return final
    tmp = src.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(final, ignore_errors=True)
    print(f"[data] writing {final} ...", flush=True)
    for path in sorted(src.glob("*/*.parquet")):
        pf = pq.ParquetFile(path)
        schema = pa.schema(
            f.with_type(_plain_type(f.type, decimals_as_float)) for f in pf.schema_arrow
        ).remove_metadata()
        out = tmp / path.parent.name / path.name
        out.parent.mkdir(parents=True, exist_ok=True)
        with pq.ParquetWriter(out, schema) as writer:
            for i in range(pf.num_row_groups):
                writer.write_table(pf.read_row_group(i).cast(schema))
    (tmp / "_SUCCESS").write_text(f"{final.name}: copy of {src.name}\n")
    tmp.rename(final)
    return final
