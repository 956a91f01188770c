"""Apache Iceberg tables through pyiceberg catalogs: names, snapshots and pruned scan planning.

``puffin.connect(catalogs={"lake": {"type": "sql", "uri": ..., "warehouse": ...}})`` names
catalogs; any other name goes to pyiceberg's own configuration (``.pyiceberg.yaml``,
``PYICEBERG_CATALOG__<NAME>__...``). ``lake.ns.table`` (or ``ns.table`` in the default catalog)
resolves to a snapshot; ``FOR VERSION AS OF <id>`` / ``FOR TIMESTAMP AS OF '<ts>'`` (and
DuckDB's ``AT (VERSION => ...)``) pick an earlier one, and ``table$snapshots`` (history, files,
manifests, partitions, refs, entries) reads a metadata table. Files are planned by pyiceberg
with the query's pushed filter, so partitions and files are pruned before any fragment exists;
reading (``operators/iceberg_scan.py``) resolves columns by field id and applies delete files.
"""

from __future__ import annotations

import datetime
import difflib
from dataclasses import dataclass, field
from typing import Any

from sqlglot import exp

from puffin import sources
from puffin.errors import BindError, NotSupportedError, PuffinError
from puffin.planner.predicates import iceberg_backend, translate
from puffin.storage import S3Config

METADATA_TABLES = ("snapshots", "history", "files", "manifests", "partitions", "refs", "entries")


@dataclass(frozen=True)
class IcebergRead:
    """What a fragment needs to read some of a table's file scan tasks (plain, picklable)."""

    metadata: Any = field(repr=False)  # pyiceberg TableMetadata
    io_properties: dict = field(repr=False)  # may hold credentials: never printed
    projected_schema: Any = field(repr=False)  # pyiceberg Schema of the snapshot read
    row_filter: Any = field(repr=False)


@dataclass(frozen=True)
class IcebergTable:
    """A resolved table at one snapshot."""

    name: str
    table: Any = field(repr=False)  # pyiceberg Table
    snapshot_id: int | None
    read: IcebergRead
    planner: Any = field(default=None, repr=False, compare=False)  # plans elsewhere (lambda_bridge.catalog)

    def plan(self, row_filter) -> tuple[sources.ScanUnit, ...]:
        """Scan units (one per data file, with its delete files) left after pruning."""
        if self.planner is not None:
            return self.planner(self, row_filter)
        return self.plan_locally(row_filter)

    def plan_locally(self, row_filter) -> tuple[sources.ScanUnit, ...]:
        """``plan`` by pyiceberg in this process."""
        from pyiceberg.manifest import DataFileContent

        scan = self.table.scan(row_filter=row_filter, snapshot_id=self.snapshot_id)
        units = []
        for task in scan.plan_files():
            kinds = {d.content for d in task.delete_files}
            if DataFileContent.EQUALITY_DELETES in kinds:
                raise NotSupportedError(f"Iceberg table {self.name} has equality delete files; "
                                        "reading them is not supported yet (positional deletes are)")
            units.append(sources.ScanUnit(rows=task.file.record_count, bytes=task.file.file_size_in_bytes,
                                          path=task.file.file_path, task=task))
        return tuple(units)


class Catalogs:
    def __init__(self, config: dict[str, dict] | None, s3: S3Config, default: str | None = None,
                 namespace: str | None = None):
        self._config = {k: dict(v) for k, v in (config or {}).items()}
        self._s3 = s3
        self.default = default or (next(iter(self._config)) if self._config else "default")
        self.namespace = namespace  # bare table names not registered resolve here, if set
        self._loaded: dict[str, Any] = {}
        self.planner = None  # plans the tables' scans instead of pyiceberg here (plan_iceberg='lambda')

    def catalog(self, name: str):
        if name in self._loaded:
            return self._loaded[name]
        try:
            from pyiceberg.catalog import load_catalog
        except ImportError:
            raise PuffinError("Iceberg tables need pyiceberg: pip install 'puffindb[iceberg]'") from None
        props = self._with_s3(self._config.get(name, {}))
        try:
            cat = load_catalog(name, **props)
        except Exception as e:  # noqa: BLE001 - pyiceberg raises many kinds for a bad config
            known = ", ".join(sorted(self._config)) or "(none configured)"
            raise BindError(f"cannot load Iceberg catalog '{name}' ({type(e).__name__}: {e}); "
                            f"configured catalogs: {known}") from None
        self._loaded[name] = cat
        return cat

    def _with_s3(self, props: dict) -> dict:
        """Give the catalog's FileIO the connection's S3 settings unless it has its own."""
        out = dict(props)
        s3 = self._s3
        defaults = {"s3.endpoint": s3.endpoint_url, "s3.region": s3.region,
                    "s3.access-key-id": s3.access_key_id.value if s3.access_key_id else None,
                    "s3.secret-access-key": s3.secret_access_key.value if s3.secret_access_key else None,
                    "s3.session-token": s3.session_token.value if s3.session_token else None}
        for k, v in defaults.items():
            if v and k not in out:
                out[k] = v
        return out

    def identify(self, table: exp.Table) -> tuple[str, str, str]:
        """(catalog, namespace, table) a name stands for: ``ns.t`` is in the default catalog, a
        bare ``t`` in the default namespace."""
        parts = [p for p in (table.catalog, table.db, table.name) if p]
        if len(parts) == 1:
            parts = [self.namespace or "default", parts[0]]
        catalog_name = parts[0] if len(parts) == 3 else self.default
        return catalog_name, parts[-2], parts[-1]

    def configured(self) -> dict[str, dict]:
        """Every configured catalog's properties, with the connection's S3 settings (for Spark)."""
        return {name: self._with_s3(props) for name, props in self._config.items()}

    def resolve(self, table: exp.Table) -> sources.Source:
        catalog_name, namespace, name = self.identify(table)
        meta = None
        if "$" in name:
            name, meta = name.split("$", 1)
        cat = self.catalog(catalog_name)
        full = f"{catalog_name}.{namespace}.{name}"
        try:
            tbl = cat.load_table((namespace, name))
        except Exception as e:  # noqa: BLE001 - NoSuchTableError, NoSuchNamespaceError, ...
            raise load_error(e, full, cat, namespace) from None
        if meta is not None:
            return self._metadata_table(tbl, full, meta)
        snapshot_id = _snapshot(tbl, full, table)
        scan = tbl.scan(snapshot_id=snapshot_id)
        projected = scan.projection()
        from pyiceberg.expressions import AlwaysTrue
        from pyiceberg.io.pyarrow import schema_to_pyarrow

        read = IcebergRead(tbl.metadata, dict(tbl.io.properties), projected, AlwaysTrue())
        handle = IcebergTable(full, tbl, snapshot_id, read, self.planner)
        units = handle.plan(AlwaysTrue())
        schema = schema_to_pyarrow(projected, include_field_ids=False)
        return sources.Source(full, "iceberg", schema, units, location=tbl.metadata_location,
                              options=(("snapshot_id", snapshot_id),), iceberg=handle)

    @staticmethod
    def _metadata_table(tbl, full: str, meta: str) -> sources.Source:
        if meta not in METADATA_TABLES:
            raise BindError(f"unknown metadata table '{full}${meta}'; valid: "
                            + ", ".join(f"${m}" for m in METADATA_TABLES))
        return sources.from_arrow(f"{full}${meta}", getattr(tbl.inspect, meta)())


def load_error(e: Exception, full: str, cat, namespace: str) -> PuffinError:
    """Why a table did not load: it does not exist (the tables that do), or its metadata file
    could not be read (object-store access: the cause, never a credential)."""
    if isinstance(e, OSError):
        from puffin.storage import is_access_denied

        text = str(e)
        for key in ("s3.secret-access-key", "s3.session-token"):
            secret = cat.properties.get(key)
            if secret:
                text = text.replace(secret, "****")
        why = ("access denied; check the catalog's credentials" if is_access_denied(text)
               else "its metadata could not be read")
        return PuffinError(f"Iceberg table '{full}' cannot be read: {why} ({text.splitlines()[0][:300]})")
    return BindError(f"Iceberg table '{full}' does not exist ({type(e).__name__}). "
                     f"Tables in {cat.name}.{namespace}: {_list(cat, namespace)}")


def _list(cat, namespace: str) -> str:
    try:
        return ", ".join(sorted(".".join(t[1:]) for t in cat.list_tables(namespace))) or "(none)"
    except Exception:  # noqa: BLE001 - the namespace itself may not exist
        try:
            return "no such namespace; namespaces: " + ", ".join(".".join(n) for n in cat.list_namespaces())
        except Exception:  # noqa: BLE001
            return "(unknown)"


def _snapshot(tbl, full: str, table: exp.Table) -> int | None:
    """The snapshot a FROM item asks for: current, FOR VERSION/TIMESTAMP AS OF, or AT (...)."""
    version = table.args.get("version")
    when = table.args.get("when")
    kind, value = None, None
    if version is not None:
        kind, value = str(version.this).upper(), version.expression
    elif when is not None:
        kind, value = str(when.args.get("kind")).upper(), when.expression
    current = tbl.metadata.current_snapshot_id
    if kind is None:
        return current
    if not isinstance(value, exp.Literal):
        raise NotSupportedError(f"time travel to {value.sql('duckdb')} (use a literal)")
    snapshots = tbl.metadata.snapshots
    if kind == "VERSION":
        sid = int(value.this)
        if tbl.metadata.snapshot_by_id(sid) is None:
            ids = [str(s.snapshot_id) for s in snapshots]
            close = difflib.get_close_matches(str(sid), ids, n=1)
            raise BindError(f"snapshot {sid} of '{full}' does not exist"
                            f"{'; did you mean ' + close[0] + '?' if close else ''}; snapshots: {', '.join(ids)}")
        return sid
    try:
        ts = datetime.datetime.fromisoformat(str(value.this))
    except ValueError:
        raise BindError(f"cannot read {value.this!r} as a timestamp for time travel on '{full}'") from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=datetime.timezone.utc)
    ms = int(ts.timestamp() * 1000)
    older = [s for s in snapshots if s.timestamp_ms <= ms]
    if not older:
        first = min((s.timestamp_ms for s in snapshots), default=None)
        when_first = datetime.datetime.fromtimestamp(first / 1000, datetime.timezone.utc) if first else None
        raise BindError(f"'{full}' has no snapshot at or before {ts.isoformat()} (first: {when_first})")
    return max(older, key=lambda s: s.timestamp_ms).snapshot_id


def to_row_filter(filters, columns: dict[str, str]):
    """pyiceberg's expression for the conjuncts it can evaluate; the rest stay in DuckDB.
    ``columns`` maps the scan's internal column names to the table's."""
    return translate(filters, columns, iceberg_backend())
