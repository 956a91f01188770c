"""Files written by Puffin's tasks, published all at once: COPY ... TO and CREATE TABLE on a path.

Every task writes its share into this query's staging directory, which readers skip (its name
starts with ``.`` or ``_``, like Spark's and pyarrow's hidden files). Only when every task has
succeeded does the driver publish:

- a local directory: the staging directory, with ``_SUCCESS`` in it, is renamed onto the target
  (one atomic rename; with OVERWRITE the old directory is renamed away first, then removed);
- a local file: the one file is renamed onto the target (atomic);
- an object-store prefix (no renames there): every staged object is copied to its place, the
  objects OVERWRITE replaces are deleted, then ``_SUCCESS`` is written last, marking it complete;
- an object-store key: one copy.

A failed, cancelled or interrupted query removes its staging and leaves nothing visible. As
DuckDB does, a directory target that already holds files needs OVERWRITE (checked before anything
runs), and a file target is replaced.

A driver killed before publishing cannot remove its staging, which stays hidden. Each staging
directory holds ``_puffin_owner`` (host, pid and start time of the writing process), and the
next write beside it removes the ones abandoned: their owner ran on this host and is gone, or
(another host's, or with no owner) nothing in them changed for ``STALE_AFTER_S``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
import uuid

import pyarrow as pa
import pyarrow.fs as pafs

from puffin.errors import PuffinError
from puffin.operators.sink import FileSink
from puffin.storage import S3Config, is_s3, s3_filesystem, storage_error, strip_scheme
from puffin.writes.statement import FileWrite

MARKER = "_SUCCESS"
OWNER = "_puffin_owner"
STALE_AFTER_S = 86400.0  # a day: no write runs that long without touching its staging
log = logging.getLogger("puffin.writes")


def _hidden(name: str) -> bool:
    return name.startswith((".", "_"))


class FileTarget:
    """The staging and publishing of one ``FileWrite``."""

    def __init__(self, write: FileWrite, s3: S3Config):
        self.write = write
        self.s3 = s3
        self.remote = is_s3(write.path)
        self.id = uuid.uuid4().hex[:12]
        path = write.path.rstrip("/")
        if self.remote:
            self.fs = s3_filesystem(s3)
            self.key = strip_scheme(path)
            parent = self.key if not write.single else self.key.rsplit("/", 1)[0]
            self.staging_prefix = f"{parent}/_puffin_staging-"
            self.staging_key = f"{self.staging_prefix}{self.id}"
            self.staging = "s3://" + self.staging_key
        else:
            self.fs = pafs.LocalFileSystem()
            self.key = os.path.abspath(os.path.expanduser(path))
            parent, name = os.path.split(self.key)
            self.staging_prefix = os.path.join(parent, f".{name}.puffin-staging-")
            self.staging = self.staging_key = f"{self.staging_prefix}{self.id}"

    # -- before anything runs ------------------------------------------------------------------
    def check(self) -> None:
        """Refuse what DuckDB refuses (a non-empty directory without OVERWRITE) and a target
        these credentials cannot write, before any task runs."""
        w = self.write
        try:
            info = self.fs.get_file_info(self.key)
            if not w.single and not w.overwrite and self._visible():
                raise PuffinError(f"COPY target {w.path} is not empty; add OVERWRITE to replace what it holds "
                                  "(as DuckDB asks)")
            if w.single and info.type == pafs.FileType.Directory:
                raise PuffinError(f"{w.path} is a directory; write a directory with PARTITION_BY, "
                                  "PER_THREAD_OUTPUT or a path ending in '/'")
            if not w.single and info.type == pafs.FileType.File:
                raise PuffinError(f"{w.path} is a file, not a directory")
            if not self.remote:
                self.fs.create_dir(self.staging_key, recursive=True)
            # first object of the staging (on S3 credentials that cannot write fail here, not midway)
            with self.fs.open_output_stream(f"{self.staging_key}/{OWNER}") as out:
                out.write(_owner_record())
        except PuffinError:
            raise
        except PermissionError as e:
            raise PuffinError(f"cannot write {w.path}: permission denied ({e.strerror or e})") from None
        except OSError as e:
            if self.remote:
                raise storage_error(e, w.path, self.s3, action="write") from None
            raise PuffinError(f"cannot write {w.path}: {e.strerror or e}") from None
        self._remove_abandoned()

    def _remove_abandoned(self) -> None:
        """Remove staging beside ours that killed writers left (never a live writer's)."""
        parent = os.path.dirname(self.staging_prefix)
        try:
            entries = self.fs.get_file_info(pafs.FileSelector(parent, allow_not_found=True))
        except OSError:
            return
        for entry in entries:
            path = entry.path.rstrip("/")
            if (entry.type != pafs.FileType.Directory or not path.startswith(self.staging_prefix)
                    or path == self.staging_key.rstrip("/")):
                continue
            try:
                why = self._abandoned(path)
                if why:
                    self.fs.delete_dir(path)
                    log.info("removed staging %s that a killed write left (%s)", path, why)
            except OSError as e:  # another writer's cleanup got there first, or no right to: theirs
                log.debug("left staging %s: %s", path, e)

    def _abandoned(self, path: str) -> str | None:
        """Why the staging directory at ``path`` is abandoned, or None if it may be in use."""
        try:
            with self.fs.open_input_stream(f"{path}/{OWNER}") as f:
                owner = json.loads(f.read())
        except (OSError, ValueError):
            owner = None
        if owner and owner.get("host") == socket.gethostname():
            if _alive(owner.get("pid"), owner.get("started")):
                return None
            return f"its writer, pid {owner.get('pid')} on this host, is gone"
        files = self.fs.get_file_info(pafs.FileSelector(path, recursive=True))
        newest = max((i.mtime.timestamp() for i in files if i.mtime is not None), default=0.0)
        if time.time() - newest > STALE_AFTER_S:
            return f"untouched for {(time.time() - newest) / 3600:.0f} h"
        return None

    def _visible(self) -> bool:
        infos = self.fs.get_file_info(pafs.FileSelector(self.key, recursive=True, allow_not_found=True))
        return any(i.type == pafs.FileType.File and not any(_hidden(p) for p in self._rel(i.path).split("/"))
                   for i in infos)

    def _rel(self, path: str) -> str:
        return os.path.relpath(path, self.key) if not self.remote else path[len(self.key):].lstrip("/")

    def sink(self, names: list[str] | None) -> FileSink:
        w = self.write
        return FileSink(self.staging, w.format, w.options, w.partition_by, w.single, tuple(names or ()),
                        self.s3 if self.remote else None)

    # -- after every task succeeded --------------------------------------------------------------
    def publish(self, written: pa.Table) -> pa.Table:
        files = [f for f in written.column("file").to_pylist() if f is not None]
        rows = sum(r for r in written.column("rows").to_pylist() if r is not None)
        try:
            if self.remote:
                self._publish_s3(files)
            else:
                self._publish_local(files)
        except OSError as e:
            self.abort()
            raise PuffinError(f"publishing {self.write.path} failed: {e}") from None
        return pa.table({"rows_written": pa.array([rows], pa.int64()), "files": pa.array([len(files)], pa.int64()),
                         "path": [self.write.path]})

    def _publish_local(self, files: list[str]) -> None:
        if self.write.single:
            if len(files) != 1:
                raise OSError(f"expected one file, the task wrote {len(files)}")
            os.replace(os.path.join(self.staging, files[0]), self.key)
            shutil.rmtree(self.staging, ignore_errors=True)
            return
        open(os.path.join(self.staging, MARKER), "wb").close()
        os.remove(os.path.join(self.staging, OWNER))
        old = None
        if os.path.isdir(self.key):
            if os.listdir(self.key):  # OVERWRITE (checked): the old files go away with one rename
                old = os.path.join(os.path.dirname(self.key), f".{os.path.basename(self.key)}.puffin-old-{self.id}")
                os.rename(self.key, old)
            else:
                os.rmdir(self.key)
        os.rename(self.staging, self.key)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def _publish_s3(self, files: list[str]) -> None:
        if self.write.single:
            if len(files) != 1:
                raise OSError(f"expected one object, the task wrote {len(files)}")
            self.fs.copy_file(f"{self.staging_key}/{files[0]}", self.key)
            self.abort()
            return
        new = set()
        for rel in files:
            self.fs.copy_file(f"{self.staging_key}/{rel}", f"{self.key}/{rel}")
            new.add(rel)
        if self.write.overwrite:
            infos = self.fs.get_file_info(pafs.FileSelector(self.key, recursive=True, allow_not_found=True))
            for i in infos:
                rel = self._rel(i.path)
                if i.type == pafs.FileType.File and rel not in new and not any(_hidden(p) for p in rel.split("/")):
                    self.fs.delete_file(i.path)
        with self.fs.open_output_stream(f"{self.key}/{MARKER}") as out:
            out.write(b"")
        self.abort()

    def abort(self) -> None:
        """Remove the staging directory (a failed query leaves nothing)."""
        try:
            self.fs.delete_dir(self.staging_key)
        except (OSError, FileNotFoundError):
            pass


def _start_time(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (Linux), telling a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _owner_record() -> bytes:
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                       "started": _start_time(os.getpid())}).encode()


def _alive(pid, started) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    return started is None or _start_time(pid) in (None, started)
