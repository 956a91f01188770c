"""The result cache: answers of earlier queries, as Parquet on a local directory or an object store.

A key covers everything that decides an answer: the normalized query text (``normalize``: parsed
and generated again by sqlglot, so whitespace, keyword case and comments do not matter), the
version of every input (``input_versions``: file paths with size and mtime, or ETag on S3; the
Iceberg snapshot read; the schema) and the settings that change answers. Any change to an input
gives another key, so a stale answer is never found; old entries age out by size.

Each entry is ``<root>/<key>.parquet`` and a small commit marker ``<key>.json`` with the data's
size and SHA-256, written after the data (locally each through a temporary name and a rename).
``get`` verifies both: a half-written or corrupt entry is a miss, removed, and the next ``put``
replaces it. A hit refreshes the marker's modification time; when the entries outgrow
``max_bytes`` the least recently used go. An unreachable store logs one warning and behaves as
an empty cache (``get`` misses, ``put`` stores nothing) until it answers again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import secrets
import time
import uuid
from typing import Any
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from puffin.errors import PuffinError
from puffin.storage import S3Config

log = logging.getLogger("puffin.cache")
FORMAT = 1  # in every key: bump when what a key covers, or how entries are stored, changes
MAX_BYTES = 10 * 2**30
ORPHAN_S = 600  # data without a marker (a crashed writer) older than this is removed
SCAN_EVERY = 50  # puts between listings of the whole cache (others' puts count then)
_PROCESS = secrets.token_hex(8)  # in-memory tables are versions of this process only


# functions whose answer changes from one run to the next: a query calling one is not cached
VOLATILE = {"rand", "random", "uuid", "gen_random_uuid", "uuidv4", "uuidv7", "now", "currenttimestamp",
            "currentdate", "currenttime", "currentdatetime", "localtimestamp", "localtime", "today",
            "get_current_timestamp", "get_current_time", "transaction_timestamp", "current_localtimestamp",
            "setseed", "nextval", "currval", "puffin_history"}


def _parse(sql, dialect: str) -> list:
    import sqlglot

    if isinstance(sql, str):
        return [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    return [sql]  # an expression the caller parsed already


def normalize(sql, dialect: str = "duckdb") -> str:
    """The query (text or a parsed sqlglot expression) as sqlglot writes it back: one text for
    every spelling of the same query (whitespace, keyword case, comments)."""
    try:
        text = ";\n".join(s.sql(dialect=dialect, comments=False) for s in _parse(sql, dialect))
    except Exception:  # noqa: BLE001 - unparsable text will fail on its own; key it verbatim
        text = " ".join(str(sql).split())
    return f"{dialect}:{text}"


def cacheable(sql, dialect: str = "duckdb") -> bool:
    """Whether the answer may come from the cache: one query (no write, no DDL) calling no
    volatile function (``VOLATILE``) and sampling nothing."""
    from sqlglot import exp

    try:
        stmts = _parse(sql, dialect)
    except Exception:  # noqa: BLE001
        return False
    if len(stmts) != 1 or not isinstance(stmts[0], exp.Query):
        return False
    for node in stmts[0].walk():
        if isinstance(node, exp.TableSample):
            return False
        if isinstance(node, exp.Func):
            name = node.name if isinstance(node, exp.Anonymous) else type(node).__name__
            if name.lower() in VOLATILE:
                return False
    return True


def input_versions(sources: dict[str, Any]) -> list[tuple] | None:
    """What identifies the current version of each input ``Source`` (the plan's ``used``).
    None: an input could not be versioned (a file vanished, S3 did not answer): do not cache."""
    out = []
    try:
        for src in sources.values():
            schema = hashlib.sha256(src.schema.to_string().encode()).hexdigest()[:16]
            head = (src.kind, src.name, src.location, repr(src.options), schema)
            if src.iceberg is not None:
                out.append((*head, "snapshot", src.iceberg.snapshot_id))
            elif src.kind == "arrow":
                out.append((*head, "memory", _PROCESS, src.source_id))
            else:
                paths = list(dict.fromkeys(u.path for u in src.units))
                versions = _s3_versions(paths, src.storage) if src.storage is not None else [
                    (p, st.st_size, st.st_mtime_ns) for p, st in ((p, os.stat(p)) for p in paths)]
                out.append((*head, "files", tuple(versions)))
    except Exception as e:  # noqa: BLE001 - missing file, store down: the query goes uncached
        log.debug("inputs not versioned (%s: %s); the query is not cached", type(e).__name__, e)
        return None
    return sorted(out, key=repr)


def _s3_versions(paths: list[str], config: S3Config) -> list[tuple]:
    """(bucket/key, size, ETag) of S3 objects, listed under their common prefix."""
    by_bucket: dict[str, list[str]] = {}
    for p in paths:
        bucket, _, key = p.partition("/")
        by_bucket.setdefault(bucket, []).append(key)
    out = []
    for bucket, keys in by_bucket.items():
        prefix, wanted = os.path.commonprefix(keys), set(keys)
        client = _s3_client(config)
        if client is not None:
            found = {o["Key"]: (o["Size"], o["ETag"])
                     for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                     for o in page.get("Contents", []) if o["Key"] in wanted}
        else:  # no boto3: size and LastModified (1 s resolution) through pyarrow
            base = f"{bucket}/{prefix.rsplit('/', 1)[0]}" if "/" in prefix else bucket
            infos = _s3_fs(config).get_file_info(pafs.FileSelector(base, recursive=True))
            found = {i.path.partition("/")[2]: (i.size, i.mtime_ns) for i in infos}
        missing = wanted - set(found)
        if missing:
            raise FileNotFoundError(f"s3://{bucket}/{min(missing)}")
        out += [(f"{bucket}/{k}", *found[k]) for k in keys]
    return out


_clients: dict[S3Config, Any] = {}


def _s3_client(config: S3Config):
    if config not in _clients:
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            return None
        _clients[config] = boto3.client(
            "s3", endpoint_url=config.endpoint_url, region_name=config.region,
            aws_access_key_id=config.access_key_id.value if config.access_key_id else None,
            aws_secret_access_key=config.secret_access_key.value if config.secret_access_key else None,
            aws_session_token=config.session_token.value if config.session_token else None,
            config=Config(connect_timeout=2, read_timeout=10, retries={"max_attempts": 2}))
    return _clients[config]


def _s3_fs(config: S3Config) -> pafs.S3FileSystem:
    """Like ``storage.s3_filesystem`` with short timeouts: a cache that does not answer is skipped."""
    kwargs: dict[str, Any] = {"region": config.region, "connect_timeout": 2, "request_timeout": 10,
                              "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=2)}
    if config.endpoint_url:
        scheme, _, host = config.endpoint_url.partition("://")
        kwargs["endpoint_override"], kwargs["scheme"] = (host.rstrip("/"), scheme) if host else (scheme, "https")
    if config.access_key_id and config.secret_access_key:
        kwargs.update(access_key=config.access_key_id.value, secret_key=config.secret_access_key.value)
        if config.session_token:
            kwargs["session_token"] = config.session_token.value
    return pafs.S3FileSystem(**kwargs)


@functools.lru_cache(maxsize=1)
def _version() -> str:
    """Puffin's version, in every key: another Puffin may answer otherwise."""
    try:
        from importlib.metadata import version

        return version("puffindb")
    except Exception:  # noqa: BLE001 - not installed (a source tree on sys.path)
        return "unknown"


def cache_key(sql_normalized: str, inputs: list[tuple], settings: Any = ()) -> str:
    if isinstance(settings, dict):
        settings = tuple(sorted(settings.items()))
    text = repr((FORMAT, _version(), sql_normalized, sorted(map(repr, inputs)), repr(settings)))
    return hashlib.sha256(text.encode()).hexdigest()


class ResultCache:
    def __init__(self, fs: pafs.FileSystem, root: str, shown_root: str, max_bytes: int = MAX_BYTES,
                 public_base_url: str | None = None, max_entry_bytes: int | None = None,
                 retry_interval: float = 30.0):
        self.fs, self.root, self.shown_root = fs, root.rstrip("/"), shown_root.rstrip("/")
        self.local = isinstance(fs, pafs.LocalFileSystem)
        self.max_bytes = int(max_bytes)
        self.max_entry_bytes = int(max_entry_bytes or max(1, min(self.max_bytes // 4, 2**30)))
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self.retry_interval = retry_interval
        self._down_until, self._warned = 0.0, False
        self._estimate: int | None = None  # bytes stored, as of the last listing plus puts since
        self._puts = 0

    key = staticmethod(cache_key)

    def uri(self, key: str) -> str:
        return f"{self.shown_root}/{key}.parquet"

    def public_url(self, key: str) -> str | None:
        """Where clients fetch the entry directly (the CDN's base URL stands for the cache root)."""
        return f"{self.public_base_url}/{key}.parquet" if self.public_base_url else None

    def _path(self, key: str, ext: str) -> str:
        return f"{self.root}/{key}.{ext}"

    # -- reading --------------------------------------------------------------------------------
    def get(self, key: str) -> pa.Table | None:
        if time.monotonic() < self._down_until:
            return None
        try:
            marker = self._read(self._path(key, "json"))
        except FileNotFoundError:
            return self._ok(None)
        except (OSError, pa.ArrowException) as e:
            return self._failed("reading", e)
        try:
            meta = json.loads(marker)
            size, digest = int(meta["bytes"]), str(meta["sha256"])
        except (ValueError, KeyError, TypeError) as e:
            return self._corrupt(key, e)
        try:
            data = self._read(self._path(key, "parquet"))
        except FileNotFoundError:  # evicted by another process meanwhile (or lost): the marker goes
            self._remove(key)
            return None
        except (OSError, pa.ArrowException) as e:
            return self._failed("reading", e)
        if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
            return self._corrupt(key, ValueError(f"{len(data)} bytes whose size or checksum differs from its marker"))
        try:
            table = pq.read_table(pa.BufferReader(data))
        except Exception as e:  # noqa: BLE001 - checksummed yet unreadable: not ours to return
            return self._corrupt(key, e)
        self._touch(key, marker)
        return self._ok(table)

    def _read(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as f:
            return f.read()

    def _touch(self, key: str, marker: bytes) -> None:
        """Record the access: the marker's mtime (locally), or the marker written again (S3)."""
        try:
            if self.local:
                now = time.time_ns()
                os.utime(self._path(key, "json"), ns=(now, now))
            else:
                self._write(self._path(key, "json"), marker)
        except (OSError, pa.ArrowException):
            pass  # its age stays as it was: no reason to fail a hit

    def _corrupt(self, key: str, e: Exception) -> None:
        log.warning("result cache entry %s is corrupt or half-written (%s: %s); ignored and removed",
                    self.uri(key), type(e).__name__, e)
        self._remove(key)

    def _remove(self, key: str) -> None:
        for ext in ("json", "parquet"):  # the marker first: readers see no entry, not a broken one
            try:
                self.fs.delete_file(self._path(key, ext))
            except (OSError, pa.ArrowException):
                pass

    # -- writing --------------------------------------------------------------------------------
    def put(self, key: str, table: pa.Table) -> str | None:
        """Store ``table`` under ``key``; its URI, or None when not stored (too large, store down)."""
        if time.monotonic() < self._down_until or table.nbytes > 8 * self.max_entry_bytes:
            return None
        sink = pa.BufferOutputStream()
        try:
            pq.write_table(table, sink)
        except (pa.ArrowException, ValueError, TypeError) as e:  # a type Parquet cannot hold
            log.debug("result not cached: %s", e)
            return None
        data = sink.getvalue()
        if data.size > self.max_entry_bytes:
            return None
        marker = json.dumps({"format": FORMAT, "bytes": data.size, "sha256": hashlib.sha256(data).hexdigest(),
                             "rows": table.num_rows, "created": time.time()}).encode()
        try:
            if self.local:
                self.fs.create_dir(self.root, recursive=True)
            self._write(self._path(key, "parquet"), data)
            self._write(self._path(key, "json"), marker)  # the commit: from now on the entry is seen
        except (OSError, pa.ArrowException) as e:
            return self._failed("writing", e)
        self._puts += 1
        if self._estimate is None or self._estimate + data.size > self.max_bytes or self._puts >= SCAN_EVERY:
            self.evict()
        else:
            self._estimate += data.size + len(marker)
        return self._ok(self.uri(key))

    def _write(self, path: str, data) -> None:
        if not self.local:  # one PUT: S3 shows the whole object or none of it
            with self.fs.open_output_stream(path) as f:
                f.write(data)
            return
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        try:
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            self.fs.move(tmp, path)  # a rename: readers see the old file or the new one
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        now = time.time_ns()
        os.utime(path, ns=(now, now))  # finer than the kernel's clock ticks: LRU order holds

    def evict(self) -> int:
        """Remove least recently used entries until they fit ``max_bytes``; returns how many."""
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        except (OSError, pa.ArrowException) as e:
            self._failed("listing", e)
            return 0
        files = {i.base_name: i for i in infos if i.type == pafs.FileType.File}
        now_ns, entries, total, removed = time.time_ns(), [], 0, 0
        for name, info in files.items():
            key, _, ext = name.partition(".")
            orphan = (ext == "parquet" and f"{key}.json" not in files) or ext.endswith("tmp") or (
                ext == "json" and f"{key}.parquet" not in files)
            if orphan and now_ns - (info.mtime_ns or now_ns) > ORPHAN_S * 1e9:
                self._delete(info.path)
            elif ext == "json" and not orphan:
                entries.append((info.mtime_ns or 0, key, info.size + files[f"{key}.parquet"].size))
            elif orphan:
                total += info.size  # being written, most likely
        total += sum(size for _, _, size in entries)
        for _, key, size in sorted(entries):
            if total <= self.max_bytes:
                break
            self._remove(key)
            total, removed = total - size, removed + 1
        self._estimate, self._puts = total, 0
        return removed

    def _delete(self, path: str) -> None:
        try:
            self.fs.delete_file(path)
        except (OSError, pa.ArrowException):
            pass

    def total_bytes(self) -> int:
        infos = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        return sum(i.size for i in infos if i.type == pafs.FileType.File)

    # -- an unreachable store -------------------------------------------------------------------
    def _failed(self, what: str, e: Exception) -> None:
        self._down_until = time.monotonic() + self.retry_interval
        if not self._warned:
            self._warned = True
            log.warning("result cache %s: %s failed (%s: %s); queries run without the cache for now",
                        self.shown_root, what, type(e).__name__, e)

    def _ok(self, value):
        if self._warned:
            self._warned = False
            log.warning("result cache %s is reachable again", self.shown_root)
        return value


def open_cache(url: str | None | bool, s3_config: S3Config | None = None, **options: Any) -> ResultCache | None:
    """The cache at ``url``: a directory (path or ``file:///dir``) or ``s3://bucket/prefix/``;
    None or False: no cache. Options: ``max_bytes``, ``public_base_url``, ``max_entry_bytes``.
    A malformed URL is a PuffinError; the store is not contacted here."""
    if url is None or url is False:
        return None
    if not isinstance(url, str) or not url.strip():
        raise PuffinError(f"malformed result cache URL {url!r}: give a directory, file:///dir or s3://bucket/prefix/")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("s3", "s3a"):
        if not parts.netloc or parts.query or parts.fragment:
            raise PuffinError(f"malformed result cache URL {url!r}: use s3://bucket/prefix/")
        root = f"{parts.netloc}/{parts.path.strip('/')}".rstrip("/")
        return ResultCache(_s3_fs(s3_config or S3Config.resolve()), root, f"s3://{root}", **options)
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path:
            raise PuffinError(f"malformed result cache URL {url!r}: a file URL is file:///absolute/dir")
        path = unquote(parts.path)
    elif "://" in url:
        raise PuffinError(f"malformed result cache URL {url!r}: unknown scheme {parts.scheme!r} "
                          "(use a directory, file:// or s3://)")
    else:
        path = url
    path = os.path.abspath(os.path.expanduser(path))
    return ResultCache(pafs.LocalFileSystem(), path, path, **options)


__all__ = ["ResultCache", "cache_key", "cacheable", "input_versions", "normalize", "open_cache"]
