"""Registry of the engines the TPC-H harness can run.

Importable from every venv (no third-party imports here): the worker process of a peer
looks up its engine class by name, the harness looks up how to start that worker.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class EngineSpec:
    name: str
    module: str  # benchmarks.engines.<module>, defines class ``Engine``
    # pip requirements of the engine's own venv; None runs it with the harness's python
    requirements: tuple[str, ...] | None = None
    # read a copy of the data with string_view columns rewritten as plain strings
    plain_strings: bool = False
    # ... and with decimals as float64 (unless --keep-decimals)
    decimals_as_float: bool = False


ENGINES: dict[str, EngineSpec] = {
    spec.name: spec
    for spec in (
        EngineSpec("puffin", "puffin_engine"),
        EngineSpec("puffin-dist", "puffin_dist_engine"),
        EngineSpec("duckdb", "duckdb_engine"),
        EngineSpec("spark", "spark_engine", requirements=("pyspark==3.5.9", "pyarrow==21.0.0", "pandas==2.2.3")),
        EngineSpec(
            "daft", "daft_engine", requirements=("daft[ray]==0.7.26",), plain_strings=True, decimals_as_float=True
        ),
        EngineSpec("polars", "polars_engine", requirements=("polars==2.1.0", "pyarrow==26.0.1")),
        EngineSpec("datafusion", "datafusion_engine", requirements=("datafusion==55.0.0", "pyarrow==26.0.1")),
    )
}


def load_engine_class(name: str) -> type:
    """Import the engine's module lazily: only the worker of that engine pays for it."""
    module = importlib.import_module(f"benchmarks.engines.{ENGINES[name].module}")
    return module.Engine
