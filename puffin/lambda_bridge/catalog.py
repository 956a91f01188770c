"""Iceberg scan planning on the Catalog function, for the driver.

With ``lambda_={"plan_iceberg": "lambda", "catalog_function": "puffin-catalog", ...}`` the driver
still loads a table's metadata (its schema and snapshots: one small JSON file) but does not read
its manifests: listing a snapshot's data files with the query's pushed filter (pyiceberg's
``plan_files``, what ``puffin.iceberg.IcebergTable.plan`` does) runs in the Catalog function,
next to the data, and comes back as the same scan units. For a big table that is thousands of
manifest reads kept off the driver and out of its network path.

``CatalogPlanner`` is what the session hands to its Iceberg catalogs (``Catalogs.planner``); each
table it resolves then plans through ``planner(table, row_filter)``. The function's failures
fall back to planning here, so a query never fails for them: throttles, service errors and
transient failures are retried first (the invoker's policy, as for fragments); a configuration
error (no such function, invoke denied, endpoint unreachable) also warns once per connection
(``LambdaFallbackWarning``), or raises a ``PuffinError`` naming ``catalog_function`` when the
connection also has ``offload="always"``. The units say where they were planned, for EXPLAIN's
scan line (``PlannedUnits.where``).
"""

from __future__ import annotations

import threading
import warnings

from puffin.errors import PuffinError
from puffin.lambda_bridge.errors import LambdaUnavailable
from puffin.lambda_bridge.offload import LambdaFallbackWarning, _short


class PlannedUnits(tuple):
    """Scan units, and where they were planned (``where``: a note for EXPLAIN). Pickles as a plain
    tuple, so nothing of the bridge travels with a plan."""

    where: str

    def __new__(cls, units, where: str = ""):
        self = super().__new__(cls, units)
        self.where = where
        return self

    def __reduce__(self):
        return (tuple, (tuple(self),))


def plan_locally(table, row_filter):
    """The table planned by pyiceberg here (``IcebergTable.plan`` without a planner)."""
    local = getattr(table, "plan_locally", None)
    return local(row_filter) if local is not None else table.plan(row_filter)


class CatalogPlanner:
    """Plans ``puffin.iceberg.IcebergTable`` scans on the Catalog function (see the module doc).

    ``invoker``: an ``Invoker``, or a callable returning one (the connection's, made when first
    needed). ``planned`` and ``fell_back`` count what happened, for EXPLAIN and tests.
    """

    def __init__(self, invoker):
        self._invoker = invoker
        self._lock = threading.Lock()
        self._warned = False
        self.planned = 0  # plans the Catalog function made
        self.fell_back = 0  # plans made here because it could not
        self.last = None  # the last plan's InvokeInfo (or LambdaUnavailable)

    def invoker(self):
        return self._invoker if hasattr(self._invoker, "plan_iceberg") else self._invoker()

    def __call__(self, table, row_filter) -> PlannedUnits:
        if row_filter is None:
            from pyiceberg.expressions import AlwaysTrue

            row_filter = AlwaysTrue()
        inv = self.invoker()
        settings = inv.settings
        catalog = table.table.catalog
        identifier = ".".join(table.table.name())  # namespace.table, as the catalog names it
        try:
            units, _, info = inv.plan_iceberg(catalog.name, dict(catalog.properties), identifier, row_filter,
                                              table.snapshot_id)
        except LambdaUnavailable as e:
            return self._fall_back(table, row_filter, e, settings)
        except PuffinError:
            raise
        except Exception as e:  # noqa: BLE001 - the bridge's own failure must not fail the query
            err = LambdaUnavailable("bridge_error", settings.catalog_function, f"{type(e).__name__}: {e}")
            return self._fall_back(table, row_filter, err, settings)
        with self._lock:
            self.planned += 1
            self.last = info
        start = "cold" if info.cold else "warm"
        retried = f", {info.retries} retries" if info.retries else ""
        return PlannedUnits(units, f"planned on Lambda {settings.catalog_function} ({start}{retried}, "
                                   f"{info.wall_ms:.0f}ms)")

    def _fall_back(self, table, row_filter, err: LambdaUnavailable, settings) -> PlannedUnits:
        with self._lock:
            self.fell_back += 1
            self.last = err
            warn = err.permanent and not self._warned
            self._warned = self._warned or err.permanent
        if err.permanent and settings.offload == "always":
            raise PuffinError(f"lambda setting 'catalog_function' with plan_iceberg='lambda' and offload='always': "
                              f"function {err.function}: {err.reason.replace('_', ' ')}: {err.detail}") from None
        if warn:
            warnings.warn(f"Iceberg planning on Lambda failed, tables are planned here: function {err.function}: "
                          f"{err.reason.replace('_', ' ')}: {err.detail} (lambda setting 'catalog_function')",
                          LambdaFallbackWarning, stacklevel=2)
        attempts = f" [{err.attempts} attempts]" if err.attempts > 1 else ""
        return PlannedUnits(plan_locally(table, row_filter),
                            f"planned here: {err.function} {err.reason}: {_short(err.detail, 80)}{attempts}")
