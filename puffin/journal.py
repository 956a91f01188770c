"""The query log and the result cache, as a session uses them around each query.

``Journal`` holds the connection's log (``puffin.querylog``: Redis, or a local JSONL file by
default) and its result cache (``puffin.cache``: Parquet on a directory or S3, off unless asked
for). ``Connection.sql`` opens an entry per query (ok or failed), asks the cache for a plain
query's answer once it is planned (the key covers every input's current version, so a touched
file or a new Iceberg snapshot misses), and stores the answer after a miss. Neither ever fails
a query: an unreachable store is one warning and the query goes on.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pyarrow as pa

from puffin import sources
from puffin.cache import cache_key, cacheable, input_versions, normalize, open_cache
from puffin.querylog import open_log


class Journal:
    def __init__(self, log: str | None, cache: str | None, cache_options: dict[str, Any] | None, s3) -> None:
        self.log = open_log(log)
        self.cache = open_cache(cache, s3_config=s3, **(cache_options or {}))

    @contextlib.contextmanager
    def entry(self, query: str):
        """The log entry of one query; an exception leaving the block is recorded and goes on up."""
        with self.log.timed(query) as entry:
            yield entry

    def key(self, text: str, dialect: str, used: dict[str, sources.Source]) -> str | None:
        """The cache key of a query's answer, or None when it may not come from the cache."""
        if self.cache is None or not cacheable(text, dialect):
            return None
        versions = input_versions(used)
        return None if versions is None else cache_key(normalize(text, dialect), versions, ())

    def lookup(self, key: str | None) -> tuple[pa.Table | None, str | None]:
        if key is None:
            return None, None
        table = self.cache.get(key)
        return table, (self.cache.uri(key) if table is not None else None)

    def store(self, key: str | None, table: pa.Table) -> str | None:
        return None if key is None else self.cache.put(key, table)

    def history_source(self) -> sources.Source:
        """The ``puffin_history()`` table: the log's entries now, newest first."""
        return sources.from_object("puffin_history", self.log.puffin_history())


def describe(plan_stages, used: dict[str, sources.Source], entry: dict) -> None:
    """What the log keeps of a planned query: its stages, Iceberg snapshots and where its
    fragments are meant to run (``inline`` for a plan run in the session)."""
    entry["stages"] = len(plan_stages)
    snaps = {src.name: src.iceberg.snapshot_id for src in used.values() if src.iceberg is not None}
    entry["snapshots"] = snaps or None
    entry["bytes_scanned"] = int(sum(s.scan.source.bytes for st in plan_stages for s in st.scans))
