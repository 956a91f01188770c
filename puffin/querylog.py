"""The query log: one JSON entry per query (ok or failed), in Redis or a local JSONL file.

``open_log(url)`` picks the store: ``redis://host:port/db`` or ``rediss://user:password@host:port/db``
(TLS + AUTH, as ElastiCache serves it), ``file:///path/log.jsonl`` or a plain path, and None for
the embedded default ``$PUFFIN_HOME/history.jsonl`` (``~/.puffin``). Query options of a URL:
``retention_days`` (default 30), ``max_entries`` (100,000), ``prefix`` (Redis keys, ``puffin:log``);
Redis URLs may also carry redis-py's own (``socket_timeout=0.5``).

Entries follow the PuffinDB log schema (``SCHEMA``). In Redis each is a JSON value at
``<prefix>:e:<id>`` (``JSON.SET`` when the server has RedisJSON, else a string) with a TTL of the
retention, and a sorted set ``<prefix>:index`` orders them by start time; records older than the
retention or beyond ``max_entries`` are trimmed as new ones come. ``record()`` never raises and
never waits long: Redis calls time out after 0.2 s, a failure logs one warning for the outage,
and for ``retry_interval`` seconds entries wait in a bounded buffer without trying Redis, then
are written when it answers again.
"""

from __future__ import annotations

import abc
import contextlib
import datetime as dt
import getpass
import json
import logging
import os
import secrets
import threading
import time
from collections import deque
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import pyarrow as pa

from puffin.errors import PuffinError

log = logging.getLogger("puffin.querylog")
UTC = dt.timezone.utc
FRAGMENT_KINDS = ("ray", "lambda", "inline")
SCHEMA = pa.schema([
    ("id", pa.string()), ("query", pa.string()), ("user", pa.string()),
    ("start", pa.timestamp("us", tz="UTC")), ("duration", pa.float64()),  # milliseconds
    ("rows", pa.int64()), ("bytes_scanned", pa.int64()), ("stages", pa.int64()),
    ("cache", pa.string()), ("error", pa.string()),
    ("snapshots", pa.map_(pa.string(), pa.int64())),  # Iceberg table -> snapshot id read
    ("fragments", pa.struct([(k, pa.int64()) for k in FRAGMENT_KINDS])),
])
RETENTION_DAYS, MAX_ENTRIES, BUFFER_ENTRIES = 30.0, 100_000, 1000

# -- ULID: 48-bit milliseconds + 80 random bits, Crockford base32, 26 characters -----------------
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_ulid_lock = threading.Lock()
_ulid_last = [0, 0]  # ms, randomness: ids made in one millisecond increase (monotonic ULIDs)


def new_ulid(ms: int | None = None) -> str:
    with _ulid_lock:
        ms = int(time.time() * 1000) if ms is None else ms
        if ms == _ulid_last[0] and _ulid_last[1] < (1 << 80) - 1:
            rand = _ulid_last[1] + 1
        else:
            rand = int.from_bytes(secrets.token_bytes(10), "big")
        _ulid_last[:] = [ms, rand]
    n = (ms << 80) | rand
    return "".join(_CROCKFORD[(n >> (5 * i)) & 31] for i in range(25, -1, -1))


def ulid_time(ulid: str) -> dt.datetime:
    n = 0
    for ch in ulid.upper():
        n = n * 32 + _CROCKFORD.index(ch)
    return dt.datetime.fromtimestamp((n >> 80) / 1000, UTC)


# -- entries ------------------------------------------------------------------------------------
def new_entry(query: str, user: str | None = None, start: dt.datetime | None = None) -> dict:
    """An entry for a query starting now; fill in the rest and ``record()`` it when it ends."""
    start = start or dt.datetime.now(UTC)
    return {"id": new_ulid(int(start.timestamp() * 1000)), "query": query, "user": user or _user(),
            "start": start.isoformat(), "duration": None, "rows": None, "bytes_scanned": None,
            "stages": None, "cache": None, "error": None, "snapshots": {},
            "fragments": dict.fromkeys(FRAGMENT_KINDS, 0)}


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (containers): still log the query
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


def _when(value: Any) -> dt.datetime:
    """A datetime (UTC) from a datetime, an ISO string or epoch seconds."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, (int, float)):
        return dt.datetime.fromtimestamp(value, UTC)
    if isinstance(value, dt.timedelta):
        return dt.datetime.now(UTC) - value
    return _when(dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")))


def _plain(v: Any) -> Any:
    if isinstance(v, dt.datetime):
        return _when(v).isoformat()
    if hasattr(v, "item"):  # numpy scalars
        return v.item()
    return str(v)


def _prepare(entry: dict) -> tuple[str, float, str]:
    """(id, start as epoch ms, JSON text) of an entry, with id and start filled if missing."""
    e = dict(entry)
    start = _when(e.get("start") or dt.datetime.now(UTC))
    e["start"] = start.isoformat()
    e.setdefault("id", new_ulid(int(start.timestamp() * 1000)))
    return e["id"], start.timestamp() * 1000, json.dumps(e, default=_plain)


def _row(e: dict) -> dict:
    snaps = e.get("snapshots") or {}
    if not isinstance(snaps, dict):
        snaps = {str(i): s for i, s in enumerate(snaps)}
    frags = e.get("fragments") or {}
    num = lambda k, cast=int: None if e.get(k) is None else cast(e[k])
    text = lambda k: None if e.get(k) is None else str(e[k])
    return {"id": text("id"), "query": text("query"), "user": text("user"), "start": _when(e["start"]),
            "duration": num("duration", float), "rows": num("rows"), "bytes_scanned": num("bytes_scanned"),
            "stages": num("stages"), "cache": text("cache"), "error": text("error"),
            "snapshots": [(str(k), int(v)) for k, v in snaps.items() if v is not None],
            "fragments": {k: int(frags.get(k) or 0) for k in FRAGMENT_KINDS}}


def to_table(entries: list[dict]) -> pa.Table:
    """Entries as a table of ``SCHEMA``, newest first (an entry that does not fit is skipped)."""
    rows = []
    for e in entries:
        try:
            rows.append(_row(e))
        except (KeyError, ValueError, TypeError, AttributeError):
            log.debug("query log entry skipped: %r", e)
    rows.sort(key=lambda r: (r["start"], r["id"] or ""), reverse=True)
    return pa.Table.from_pylist(rows, schema=SCHEMA)


# -- logs ---------------------------------------------------------------------------------------
class QueryLog(abc.ABC):
    """Where entries go (``FileLog``, ``RedisLog``). ``record`` never raises; ``history`` reads
    them back as a table."""

    url: str = ""

    def __init__(self, retention_days: float = RETENTION_DAYS, max_entries: int = MAX_ENTRIES):
        self.retention_s = float(retention_days) * 86400
        self.max_entries = int(max_entries)
        self._warned = False

    @abc.abstractmethod
    def record(self, entry: dict) -> None: ...

    @abc.abstractmethod
    def history(self, last: int | None = None, since: Any = None) -> pa.Table: ...

    def puffin_history(self) -> pa.Table:
        """The ``puffin_history()`` table: every entry kept, newest first."""
        return self.history()

    @contextlib.contextmanager
    def timed(self, query: str, user: str | None = None):
        """``with log.timed(sql) as entry: ...`` records the entry with its duration, and the
        error of an exception leaving the block (which goes on up)."""
        entry, t0 = new_entry(query, user), time.perf_counter()
        try:
            yield entry
        except BaseException as e:
            entry["error"] = entry.get("error") or f"{type(e).__name__}: {e}"
            raise
        finally:
            if entry.get("duration") is None:
                entry["duration"] = (time.perf_counter() - t0) * 1000
            self.record(entry)

    def ping(self) -> bool:
        """Whether the log answers now (a failure is the outage's one warning)."""
        return True

    def close(self) -> None:
        pass

    def _cutoff_ms(self) -> float:
        return (time.time() - self.retention_s) * 1000

    def _failed(self, what: str, e: Exception) -> None:
        if not self._warned:
            self._warned = True
            log.warning("query log %s: %s failed (%s: %s); queries go on, entries %s", self.url, what,
                        type(e).__name__, e, "wait in a buffer" if isinstance(self, RedisLog) else "are dropped")

    def _recovered(self, note: str = "") -> None:
        if self._warned:
            self._warned = False
            log.warning("query log %s is reachable again%s", self.url, note)


class FileLog(QueryLog):
    """JSON lines in one file: appended per query, trimmed (retention, max entries) now and then."""

    def __init__(self, path: str, **opts: Any):
        super().__init__(**opts)
        self.path = os.path.abspath(os.path.expanduser(path))
        self.url = self.path
        self._lock = threading.Lock()
        self._since_trim = self.max_entries  # trim on the first record

    def record(self, entry: dict) -> None:
        try:
            _, _, text = _prepare(entry)
            with self._lock:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, (text + "\n").encode())  # one write: lines of processes never mix
                finally:
                    os.close(fd)
                self._since_trim += 1
                if self._since_trim > max(10, self.max_entries // 10):
                    self._trim()
            self._recovered()
        except Exception as e:  # noqa: BLE001 - logging must never fail a query
            self._failed("writing", e)

    def _read(self) -> list[dict]:
        out = []
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    with contextlib.suppress(ValueError, TypeError, KeyError):  # a torn last line
                        e = json.loads(line)
                        e["_ms"] = _when(e["start"]).timestamp() * 1000
                        out.append(e)
        except FileNotFoundError:
            pass
        return out

    def _trim(self) -> None:
        self._since_trim = 0
        entries = self._read()
        cutoff = self._cutoff_ms()
        keep = sorted((e for e in entries if e["_ms"] >= cutoff), key=lambda e: (e["_ms"], e.get("id", "")))
        keep = keep[-self.max_entries:] if self.max_entries > 0 else []
        if len(keep) == len(entries):
            return
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps({k: v for k, v in e.items() if k != "_ms"}, default=_plain) + "\n"
                         for e in keep)
        os.replace(tmp, self.path)

    def history(self, last: int | None = None, since: Any = None) -> pa.Table:
        with self._lock:
            entries = self._read()
        floor = max(self._cutoff_ms(), _when(since).timestamp() * 1000 if since is not None else 0)
        table = to_table([e for e in entries if e["_ms"] >= floor])
        return table.slice(0, min(self.max_entries, last if last is not None else self.max_entries))


class RedisLog(QueryLog):
    def __init__(self, url: str, prefix: str = "puffin:log", retry_interval: float = 5.0,
                 timeout: float = 0.2, **opts: Any):
        super().__init__(**opts)
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.url = _shown(url)
        self.prefix = prefix
        self.retry_interval = retry_interval
        self._client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                            retry=Retry(NoBackoff(), 0), decode_responses=True)
        self._errors = (redis.RedisError, OSError)
        self._refused = redis.ResponseError
        self._json: bool | None = None  # RedisJSON loaded? asked once connected
        self._lock = threading.Lock()
        self._buffer: deque[tuple[str, float, str]] = deque(maxlen=BUFFER_ENTRIES)
        self._dropped = 0
        self._down_until = 0.0

    def _key(self, id_: str) -> str:
        return f"{self.prefix}:e:{id_}"

    def _has_json(self) -> bool:
        if self._json is None:
            try:
                mods = self._client.execute_command("MODULE", "LIST") or []
            except self._refused:  # MODULE not allowed (ElastiCache) or unknown: plain strings
                mods = []
            names = set()
            for m in mods:
                m = m if isinstance(m, dict) else dict(zip(m[::2], m[1::2]))
                names.add(str(m.get("name", "")).lower())
            self._json = bool({"rejson", "json", "redisjson"} & names)
        return self._json

    def record(self, entry: dict) -> None:
        try:
            item = _prepare(entry)
        except Exception as e:  # noqa: BLE001 - an entry that cannot be serialised: dropped
            log.warning("query log: cannot serialise an entry: %s", e)
            return
        with self._lock:
            if len(self._buffer) == self._buffer.maxlen:
                self._dropped += 1
            self._buffer.append(item)
            if time.monotonic() < self._down_until:
                return
            try:
                self._flush()
            except Exception as e:  # noqa: BLE001 - Redis errors, timeouts, anything: never the query's
                self._down_until = time.monotonic() + self.retry_interval
                self._failed("writing", e)

    def _flush(self) -> None:
        use_json, flushed = self._has_json(), len(self._buffer)
        index, now_ms = f"{self.prefix}:index", time.time() * 1000
        pipe = self._client.pipeline(transaction=False)
        for id_, ms, text in self._buffer:
            ttl = int((ms - now_ms) / 1000 + self.retention_s) + 1
            if ttl <= 1:
                continue  # already past the retention
            if use_json:
                pipe.execute_command("JSON.SET", self._key(id_), "$", text)
                pipe.expire(self._key(id_), ttl)
            else:
                pipe.set(self._key(id_), text, ex=ttl)
            pipe.zadd(index, {id_: ms})
        pipe.zremrangebyscore(index, "-inf", f"({now_ms - self.retention_s * 1000}")
        pipe.zcard(index)
        count = pipe.execute()[-1]
        self._buffer.clear()
        if count > self.max_entries:  # the oldest over the cap go, keys and index alike
            old = self._client.zrange(index, 0, count - self.max_entries - 1)
            if old:
                self._client.pipeline(transaction=False).delete(*map(self._key, old)).zrem(index, *old).execute()
        note = f"; {flushed} entries written" + (f", {self._dropped} dropped" if self._dropped else "")
        self._dropped = 0
        self._recovered(note)

    def history(self, last: int | None = None, since: Any = None) -> pa.Table:
        floor = max(self._cutoff_ms(), _when(since).timestamp() * 1000 if since is not None else 0)
        try:
            with self._lock:
                if self._buffer:
                    with contextlib.suppress(*self._errors):
                        self._flush()
                ids = self._client.zrevrangebyscore(f"{self.prefix}:index", "+inf", floor,
                                                    start=0 if last is not None else None, num=last)
                texts = self._values(ids) if ids else []
        except self._errors as e:
            raise PuffinError(f"cannot read the query log at {self.url}: {type(e).__name__}: {e}") from None
        entries = []
        for t in texts:
            with contextlib.suppress(ValueError, TypeError):
                entries.append(json.loads(t))
        return to_table([e for e in entries if isinstance(e, dict)])

    def _values(self, ids: list[str]) -> list[str | None]:
        keys = [self._key(i) for i in ids]
        if not self._has_json():
            return self._client.mget(keys)
        pipe = self._client.pipeline(transaction=False)
        for k in keys:
            pipe.execute_command("JSON.GET", k)
        return [v if isinstance(v, str) else None for v in pipe.execute(raise_on_error=False)]

    def ping(self) -> bool:
        try:
            self._client.ping()
        except self._errors as e:
            self._down_until = time.monotonic() + self.retry_interval
            self._failed("connecting", e)
            return False
        self._down_until = 0.0
        return True

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()


def _shown(url: str) -> str:
    """The URL without its password (for messages)."""
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username or ''}:****@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def default_path() -> str:
    return os.path.join(os.environ.get("PUFFIN_HOME") or os.path.expanduser("~/.puffin"), "history.jsonl")


def open_log(url: str | None = None, **options: Any) -> QueryLog:
    """The query log at ``url`` (see the module's docstring); a malformed URL is a PuffinError.
    Nothing is contacted here: an unreachable Redis is one warning at the first record."""
    if url is None:
        return FileLog(default_path(), **options)
    if not isinstance(url, str) or not url.strip():
        raise PuffinError(f"malformed query log URL {url!r}: give redis://host:port/db, rediss://..., "
                          "file:///path/log.jsonl or a path")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt"):
        if scheme == "file" and parts.netloc not in ("", "localhost"):
            raise PuffinError(f"malformed query log URL {url!r}: a file URL is file:///absolute/path")
        path = unquote(parts.path) if scheme == "file" else url
        if not path or path.endswith(("/", os.sep)):
            raise PuffinError(f"malformed query log URL {url!r}: it names no file")
        return FileLog(path, **options)
    if scheme not in ("redis", "rediss"):
        raise PuffinError(f"malformed query log URL {_shown(url)!r}: unknown scheme {parts.scheme!r} "
                          "(use redis://, rediss://, file:// or a path)")
    query = dict(parse_qsl(parts.query))
    try:
        _ = parts.port
        if parts.path.strip("/") and not parts.path.strip("/").isdigit():
            raise ValueError(f"database {parts.path.strip('/')!r} is not a number")
        for name, cast in (("retention_days", float), ("max_entries", int), ("prefix", str)):
            if name in query:
                options.setdefault(name, cast(query.pop(name)))
    except ValueError as e:
        raise PuffinError(f"malformed query log URL {_shown(url)!r}: {e}") from None
    rest = urlunsplit(parts._replace(query=urlencode(query)))
    try:
        return RedisLog(rest, **options)
    except (ValueError, TypeError) as e:  # redis-py's own checks of the URL's options
        raise PuffinError(f"malformed query log URL {_shown(url)!r}: {e}") from None
    except ImportError:
        raise PuffinError("a Redis query log needs redis-py: pip install redis") from None


__all__ = ["SCHEMA", "FileLog", "QueryLog", "RedisLog", "default_path", "new_entry", "new_ulid", "open_log",
           "to_table", "ulid_time"]
