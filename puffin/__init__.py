"""Puffin: distributed SQL for Python. DuckDB on Arrow partitions, scheduled by Ray.

    import puffin
    puffin.sql("SELECT 42").show()
    con = puffin.connect(target_partitions=8)
    con.register("lineitem", "data/lineitem/*.parquet")
    con.sql("SELECT l_returnflag, count(*) FROM lineitem GROUP BY 1").show()
"""

from puffin.errors import (
    BindError,
    ExecutionError,
    InternalError,
    NotSupportedError,
    PuffinError,
    QueryCancelled,
    SqlSyntaxError,
    TransientError,
    TypeCheckError,
)
from puffin.signals import sigint_blocked

with sigint_blocked():  # threads the libraries start on import (OpenBLAS's, ...) leave Ctrl-C to main
    from puffin.result import Result
    from puffin.session import Connection, connect, history, sql

__version__ = "0.1.0"

__all__ = [
    "BindError",
    "Connection",
    "ExecutionError",
    "InternalError",
    "NotSupportedError",
    "PuffinError",
    "QueryCancelled",
    "Result",
    "SqlSyntaxError",
    "TransientError",
    "TypeCheckError",
    "connect",
    "history",
    "sql",
]
