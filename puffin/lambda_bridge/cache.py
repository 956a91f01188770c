"""The warm-partition cache of an Engine function instance.

Files a fragment reads from S3 are copied once into a bounded directory under /tmp (least
recently used out first) and later fragments of the same file, routed to the same warm instance
by the invoker's consistent hashing, read the local copy natively with DuckDB (as Puffin reads
local Parquet everywhere). Only Parquet is cached: CSV and JSON keep pyarrow's parsing. An entry is keyed
by the object's path and its ETag (size and modification time where a store gives no ETag), and
every use checks that key with a HEAD first, so a rewritten object is a miss, never a stale read.

Iceberg data and delete files are cached too, keyed by their path alone: Iceberg never rewrites a
file in place (a snapshot + file names immutable bytes), so no HEAD is needed. Their reads keep
going through pyiceberg (field ids, delete files): the read's FileIO becomes ``CachedFileIO``,
(``iceberg_io``), which opens the local copies of the files it was given and the table's own
FileIO for the rest,
and the files keep their S3 paths (position deletes name them).

Settings (environment): ``PUFFIN_LAMBDA_CACHE_BYTES`` (budget, default 512 MiB; 0 disables),
``PUFFIN_LAMBDA_CACHE_DIR`` (default ``/tmp/puffin-cache``), ``PUFFIN_LAMBDA_CACHE_MAX_FILE``
(largest file cached, default a quarter of the budget).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field

import pyarrow.fs as pafs

from puffin.storage import s3_filesystem

CHUNK = 8 << 20


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    hit_bytes: int = 0
    miss_bytes: int = 0
    bypassed: int = 0  # files read straight from S3: too big, or a kind the cache does not hold
    evictions: int = 0

    def since(self, before: CacheStats) -> CacheStats:
        return CacheStats(*(getattr(self, f.name) - getattr(before, f.name) for f in dataclasses.fields(self)))


@dataclass
class _Entry:
    local: str
    size: int


@dataclass
class FileCache:
    directory: str
    budget: int
    max_file: int
    stats: CacheStats = field(default_factory=CacheStats)
    _entries: OrderedDict = field(default_factory=OrderedDict)
    _used: int = 0

    @classmethod
    def from_env(cls) -> FileCache:
        budget = int(os.environ.get("PUFFIN_LAMBDA_CACHE_BYTES") or 512 << 20)
        directory = os.environ.get("PUFFIN_LAMBDA_CACHE_DIR") or os.path.join(tempfile.gettempdir(), "puffin-cache")
        max_file = int(os.environ.get("PUFFIN_LAMBDA_CACHE_MAX_FILE") or budget // 4)
        _remove_dead(directory)
        return cls(os.path.join(directory, str(os.getpid())), budget, max_file)

    @property
    def used(self) -> int:
        return self._used

    def localize(self, fragment):
        """The fragment with every cacheable S3 read pointed at local copies (fetched on a miss)."""
        if self.budget <= 0:
            return fragment
        pinned: set = set()  # what this fragment reads is never evicted to make room for more of it
        scans = tuple(self._localize_read(r, pinned) for r in fragment.scans)
        return dataclasses.replace(fragment, scans=scans)

    def _localize_read(self, read, pinned: set):
        if read.kind == "iceberg":
            return self._localize_iceberg(read, pinned)
        if read.storage is None or not read.units:
            return read
        if read.kind != "parquet":  # CSV/JSON parse differently natively than through pyarrow: not cached
            self.stats.bypassed += len({u.path for u in read.units})
            return read
        fs = s3_filesystem(read.storage)
        paths = list(dict.fromkeys(u.path for u in read.units))
        try:
            versions = {p: _version(fs, p) for p in paths}
        except OSError:
            return read  # let the normal read report the storage error with its own message
        sizes = [size for _, size in versions.values()]
        if max(sizes) > self.max_file or sum(sizes) > self.budget // 2:
            self.stats.bypassed += len(paths)
            return read
        local = {}
        for p in paths:
            tag, size = versions[p]
            pinned.add((p, tag))
            local[p] = self._get(fs.open_input_stream, p, tag, size, pinned)
        units = tuple(dataclasses.replace(u, path=local[u.path]) for u in read.units)
        return dataclasses.replace(read, units=units, storage=None)

    def _localize_iceberg(self, read, pinned: set):
        extra = read.extra
        if extra is None or not read.units or any(u.task is None for u in read.units):
            return read
        files: dict[str, int] = {}
        for u in read.units:
            for f in (u.task.file, *u.task.delete_files):
                files[f.file_path] = f.file_size_in_bytes
        remote = {p: size for p, size in files.items() if p.startswith(("s3://", "s3a://"))}
        if not remote:
            return read
        if max(remote.values()) > self.max_file or sum(remote.values()) > self.budget // 2:
            self.stats.bypassed += len(remote)
            return read
        from pyiceberg.io import load_file_io

        io = load_file_io(extra.io_properties, extra.metadata.location)
        local = {}
        for p, size in remote.items():
            pinned.add((p, ICEBERG_TAG))
            local[p] = self._get(lambda path: io.new_input(path).open(seekable=False), p, ICEBERG_TAG, size, pinned)
        from puffin.lambda_bridge.iceberg_io import properties

        props = properties(extra.io_properties, local, extra.metadata.location)
        return dataclasses.replace(read, extra=dataclasses.replace(extra, io_properties=props))

    def _get(self, open_stream, path: str, tag: str, size: int, pinned: set) -> str:
        key = (path, tag)
        entry = self._entries.get(key)
        if entry is not None and os.path.exists(entry.local):
            self._entries.move_to_end(key)
            self.stats.hits += 1
            self.stats.hit_bytes += entry.size
            return entry.local
        if entry is not None:  # the file vanished from /tmp: forget it
            self._drop(key)
        self._make_room(size, pinned)
        os.makedirs(self.directory, exist_ok=True)
        digest = hashlib.sha256(f"{path}\0{tag}".encode()).hexdigest()[:24]
        target = os.path.join(self.directory, f"{digest}-{os.path.basename(path)}")
        part = target + ".part"
        with open_stream(path) as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK)
        os.replace(part, target)
        self._entries[key] = _Entry(target, size)
        self._used += size
        self.stats.misses += 1
        self.stats.miss_bytes += size
        return target

    def _make_room(self, size: int, pinned: set) -> None:
        for key in [k for k in self._entries if k not in pinned]:  # least recently used first
            if self._used + size <= self.budget:
                return
            self._drop(key)
            self.stats.evictions += 1

    def _drop(self, key) -> None:
        entry = self._entries.pop(key)
        self._used -= entry.size
        try:
            os.unlink(entry.local)
        except OSError:
            pass

    def clear(self) -> None:
        for key in list(self._entries):
            self._drop(key)


ICEBERG_TAG = "iceberg"  # an Iceberg file's bytes never change: its path is its version


def _remove_dead(directory: str) -> None:
    """Copies left by instances that are gone (a killed local worker; on Lambda /tmp dies with them)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if name.isdigit() and int(name) != os.getpid() and not _alive(int(name)):
            shutil.rmtree(os.path.join(directory, name), ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _version(fs: pafs.FileSystem, path: str) -> tuple[str, int]:
    """The object's identity now: its ETag (from a HEAD) or size + modification time, and size."""
    with fs.open_input_file(path) as f:
        size = f.size()
        try:
            meta = f.metadata()
        except Exception:  # noqa: BLE001 - a store without metadata: fall back below
            meta = None
        etag = meta.get("ETag") if meta is not None else None
        if etag:
            return f"etag:{etag.decode() if isinstance(etag, bytes) else etag}", size
    info = fs.get_file_info(path)
    return f"mtime:{info.mtime_ns}:{info.size}", size
