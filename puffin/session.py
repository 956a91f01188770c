"""Connections: where tables are registered and queries start.

``puffin.connect()`` returns a ``Connection``; ``puffin.sql()`` uses a default one. A query is
planned once on the driver (``puffin.planner``) and its fragments run on Ray
(``puffin.runtime``); only the final partition comes back.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from puffin import sources
from puffin.errors import BindError, PuffinError
from puffin.iceberg import Catalogs
from puffin.inline import run_inline, run_inline_on_lambda, runs_inline
from puffin.journal import Journal, describe
from puffin.planner import Binder, QueryPlan, Settings, plan_query
from puffin.planner.explain import explain
from puffin.planner.fragments import make_fragments
from puffin.planner.parse import retry_deep, split_explain
from puffin.progress import Bar
from puffin.progress import callback as progress_callback
from puffin.result import Result
from puffin.storage import S3Config, storage_error
from puffin.writes.statement import is_write

SMALL_INPUT_BYTES = 64e6  # below this the whole query is one partition (the fast path)
BYTES_PER_PARTITION = 1e9
PLAN_CACHE_SIZE = 128
INLINE_POLL_S = 0.1  # a query run in-process is watched this often for Ctrl-C and its timeout
INTERRUPT_SETTLE_S = 10.0  # the longest wait for an interrupted in-process query to stop  # above one partition per CPU, one more per this many input bytes


TUNABLES = ("broadcast_bytes", "replicate_bytes", "bytes_per_scan_task", "range_sort_rows", "one_task_bytes")


class Connection:
    """A session: registered tables, planning settings, and the Ray cluster it runs on.

    ``config`` tunes the physical planner: ``broadcast_bytes`` (largest estimated join side
    sent whole to every task; 0 forces hash joins), ``replicate_bytes`` (largest source a task
    reads whole instead of receiving it through an exchange), ``bytes_per_scan_task`` and
    ``range_sort_rows`` (ORDER BY over more estimated rows range-partitions; 0 always does),
    ``one_task_bytes`` (local inputs up to this size each run the whole query as one DuckDB task
    using all of a node's cores; default: no limit on a one-node cluster, 64 MB on several).

    ``lambda_`` (with the environment's ``PUFFIN_LAMBDA_*``) offloads scan fragments over S3 to
    AWS Lambda: see ``connect`` and ``puffin.lambda_bridge``. Left out, nothing is offloaded and
    the bridge is not imported.
    """

    def __init__(self, address: str | None = None, target_partitions: int | None = None,
                 num_cpus: int | None = None, config: dict[str, float] | None = None,
                 s3: dict[str, Any] | None = None, catalogs: dict[str, dict] | None = None,
                 default_catalog: str | None = None, default_namespace: str | None = None,
                 plan_cache: bool = True, prestart: bool | None = None, lambda_: dict[str, Any] | None = None,
                 log: str | None = None, cache: str | None = None, cache_options: dict[str, Any] | None = None,
                 spark: dict[str, Any] | None = None):
        if target_partitions is not None and (not isinstance(target_partitions, int) or target_partitions < 1):
            raise PuffinError("target_partitions must be a positive integer")
        unknown = set(config or {}) - set(TUNABLES)
        if unknown:
            raise PuffinError(f"unknown config {sorted(unknown)}; valid: {', '.join(TUNABLES)}")
        self.config = dict(config or {})
        self._s3 = S3Config.resolve(s3)  # environment + overrides, resolved once, on the driver
        self.target_partitions = target_partitions
        self._address = address
        self._num_cpus = num_cpus
        self._tables: dict[str, sources.Source] = {}
        self._files: dict[tuple, tuple[tuple, sources.Source]] = {}
        self._catalogs = Catalogs(catalogs, self._s3, default_catalog, default_namespace)
        self._binder = Binder(self._tables, self._resolve_files, self._catalogs.resolve)
        self._binder.default_namespace = default_namespace
        self._executor = None
        self._cache_lock = threading.Lock()  # the plan cache and the executor; never held while planning
        self._version = 0  # bumped by register/unregister: cached plans name the tables they saw
        self._plans: OrderedDict[tuple, _Planned] | None = OrderedDict() if plan_cache else None
        self._journal = Journal(log, cache, cache_options, self._s3)  # malformed URLs: PuffinError here
        self._binder.table_functions["puffin_history"] = self._journal.history_source
        self._lambda = _lambda_settings(lambda_)  # None: nothing is offloaded (and nothing imported)
        self._invoker = None
        if self._lambda is not None and self._lambda.plan_iceberg == "lambda":
            from puffin.lambda_bridge.catalog import CatalogPlanner

            self._catalogs.planner = CatalogPlanner(self._lambda_invoker)
        self._spark_options = spark  # Spark for MERGE/UPDATE/DELETE/overwrites: started on first need
        self._spark_client = None
        if prestart is None:
            prestart = _wants_ray(address, target_partitions, config, s3, catalogs, lambda_)
        if prestart:
            from puffin import launch

            launch.prestart(address, num_cpus)

    # -- tables ------------------------------------------------------------------------------
    def register(self, name: str, obj: Any, format: str | None = None, **options: Any) -> Connection:
        """Name a file, glob, directory (Hive-partitioned too), pyarrow Table or pandas DataFrame."""
        if not name or not isinstance(name, str):
            raise BindError("a table needs a non-empty name")
        if isinstance(obj, str) or hasattr(obj, "__fspath__"):
            src = sources.from_path(name, str(obj), format, options, self._s3)
        else:
            src = sources.from_object(name, obj)
        self._tables[name.lower()] = src
        self._version += 1
        return self

    def unregister(self, name: str) -> None:
        self._tables.pop(name.lower(), None)
        self._version += 1

    def tables(self) -> list[str]:
        return sorted(self._tables)

    def _resolve_files(self, location, kind, options) -> sources.Source:
        """A direct file reference: listed again on every query (like DuckDB), so new, removed or
        rewritten files are seen; file metadata is re-read only when the listing changed."""
        key = (tuple(location) if isinstance(location, list) else location, kind, tuple(sorted(options.items())))
        try:
            now = sources.listing(location, self._s3)
        except OSError as e:
            raise storage_error(e, str(location), self._s3) from None
        cached = self._files.get(key)
        if cached is None or cached[0] != now:
            name = location if isinstance(location, str) else ",".join(location)
            cached = (now, sources.from_path(name, location, kind, options, self._s3))
            self._files[key] = cached
        return cached[1]

    # -- queries -----------------------------------------------------------------------------
    def _runtime(self):
        if self._executor is None:
            from puffin import launch

            launch.ready(self._address, self._num_cpus)
            from puffin import runtime

            with self._cache_lock:
                if self._executor is None:
                    self._executor = runtime.Executor()
        return self._executor

    def _remote(self) -> bool:
        """Whether queries run on a cluster named by address (not one started here)."""
        return bool(self._address or os.environ.get("RAY_ADDRESS"))

    def _settings(self, cpus: int, nodes: int, used: dict[str, sources.Source]) -> Settings:
        config = dict(self.config)
        if nodes == 1:
            config.setdefault("one_task_bytes", math.inf)
        if self.target_partitions:
            return Settings(self.target_partitions, True, cpus, **config)
        biggest = max((s.bytes for s in used.values()), default=0)
        n = 1 if biggest < SMALL_INPUT_BYTES else max(cpus, math.ceil(biggest / BYTES_PER_PARTITION))
        return Settings(n, False, cpus, **config)

    def _plan(self, text: str, dialect: str, cpus: int, mem: int | None, nodes: int = 1,
              gather: bool = True) -> _Planned:
        """Plan a query, or reuse the plan of the same text against the same tables.

        Plans that read Iceberg tables or direct file references are not kept: a new commit or
        new files must be seen. Registered tables list their files once, at registration.
        Planning holds no lock: queries on one connection plan concurrently.
        """
        key = (text, dialect, self._version, cpus, mem, nodes, gather)
        if self._plans is not None:
            with self._cache_lock:
                hit = self._plans.get(key)
                if hit is not None:
                    self._plans.move_to_end(key)
                    return hit

        def plan() -> _Planned:
            qp = plan_query(text, dialect, self._binder, lambda used: self._settings(cpus, nodes, used), gather)
            return _Planned(qp, {st.id: make_fragments(st, cpus, mem) for st in qp.stages}, qp.used)

        planned = retry_deep(plan)  # deeply nested expressions plan on a large stack
        used = planned.used
        if self._plans is not None and not any(src.iceberg is not None or name.startswith("__src_")
                                               for name, src in used.items()):
            with self._cache_lock:
                self._plans[key] = planned
                if len(self._plans) > PLAN_CACHE_SIZE:
                    self._plans.popitem(last=False)
        return planned

    def sql(self, query: str, dialect: str = "duckdb", timeout: float | None = None, cache: bool = True,
            engine: str = "puffin", progress=None) -> Result:
        """Run ``query``. Past ``timeout`` seconds its tasks are cancelled and ``QueryCancelled``
        is raised; on KeyboardInterrupt they are cancelled and the interrupt goes on up.

        In embedded mode (no cluster address) a plan of one task runs right here, in this
        thread, with DuckDB on this machine's cores: ``SELECT 42`` or a query over a small table
        answers in a millisecond or two, and on a one-node cluster every query over local files
        is such a plan, so none waits for Ray to start or pays a task round trip; Ctrl-C and
        ``timeout`` interrupt it as they cancel tasks on Ray. Queries on one connection may come
        from several threads: each plans and runs on its own.

        Every query, ok or failed, is logged (``connect(log=...)``); with a result cache
        (``connect(cache=...)``) a plain query over unchanged inputs is answered from it, unless
        ``cache=False``.

        Write statements (COPY ... TO, CREATE TABLE, INSERT, MERGE, UPDATE, DELETE) run through
        ``puffin.writes`` and return the rows written. ``engine="spark"`` runs the whole query on
        Spark SQL (``connect(spark=...)``) and brings its rows back as Arrow.

        ``progress``: a bar on stderr for queries over a second (stages and tasks done, rows and
        bytes scanned); True, False, a callable taking ``puffin.progress.Progress``, or None
        (shown when stderr is a terminal or in a notebook; ``PUFFIN_PROGRESS`` overrides)."""
        report = progress_callback(progress)
        try:
            return self._sql(query, dialect, timeout, cache, engine, report)
        finally:
            if isinstance(report, Bar):
                report.close()

    def _sql(self, query: str, dialect: str, timeout: float | None, cache: bool, engine: str, report) -> Result:
        text, mode = split_explain(query)
        if engine not in ("puffin", "spark"):
            raise PuffinError(f"unknown engine {engine!r}; engines: puffin, spark")
        if engine == "spark" and not is_write(text):
            with self._journal.entry(query) as entry:
                from puffin.writes import spark

                return spark.read(self, text, dialect, mode, timeout, entry)
        if is_write(text):  # COPY, CREATE TABLE, INSERT, MERGE, UPDATE, DELETE, CALL: puffin.writes
            with self._journal.entry(query) as entry:
                from puffin.writes import run_write

                return run_write(self, text, dialect, mode, timeout, entry, report)
        with self._journal.entry(query) as entry:
            local = not self._remote()
            before_ray = local and not self._ray_running()
            cpus, mem, nodes = self._cluster_shape(before_ray)
            planned = self._plan(text, dialect, cpus, mem, nodes)
            describe(planned.plan.stages, planned.used, entry)
            key = self._journal.key(text, dialect, planned.used) if cache and mode != "analyze" else None
            hit, uri = self._journal.lookup(key)
            if mode == "explain":
                decisions = self._decisions(planned, cpus if before_ray else None)
                notes = None if decisions is None else _offload_notes(decisions)
                text_ = explain(planned.plan.stages, planning_ms=planned.plan.planning_ms, notes=notes)
                if key is not None:
                    text_ += f"\nresult cache: {'hit ' + uri if hit is not None else 'miss'}"
                return _text_result(text_)
            if hit is not None:  # the same query over the same versions of its inputs
                entry.update(cache=uri, rows=hit.num_rows, fragments={"ray": 0, "lambda": 0, "inline": 0})
                return Result(hit)
            result = self._execute(planned, text, dialect, mode, timeout, local, before_ray, cpus, entry,
                                   progress=report)
            if mode is None:
                entry["rows"] = result.arrow().num_rows
                entry["cache"] = self._journal.store(key, result.arrow())
            return result

    def _cluster_shape(self, before_ray: bool) -> tuple[int, int | None, int]:
        """CPUs, memory per CPU and nodes to plan for (Ray's, once it runs)."""
        if before_ray:  # the local Ray to come is one node with this machine's CPUs
            return self._num_cpus or os.cpu_count() or 1, None, 1
        self._runtime()
        from puffin import runtime

        return runtime.cluster_cpus(), runtime.memory_per_cpu(), runtime.node_count()

    def _execute(self, planned: _Planned, text: str, dialect: str, mode: str | None, timeout: float | None,
                 local: bool, before_ray: bool, cpus: int, entry: dict, shape=None, gather: bool = True,
                 progress=None) -> Result:
        """Run a planned query: in this thread (one task), on Lambda, or on Ray. ``shape`` (a
        write's) turns each plan made for it into the one that runs: its last stage writes, and
        nothing of it goes to Lambda; ``gather`` is how it was planned."""
        writing = shape is not None
        if writing:
            planned = shape(planned)
        tasks = sum(st.tasks for st in planned.plan.stages)
        if local and runs_inline(planned):
            offload = None if writing else self._offload(planned, cpus if before_ray else None)
            if offload is None or not offload.active:
                entry["fragments"] = {"ray": 0, "lambda": 0, "inline": 1}
                table, metrics = run_inline(planned, timeout, progress)
                return self._finish(planned.plan, table, metrics, mode, inline="ran in this process (one task)")
            if timeout is None:  # the one fragment goes to Lambda from here, no Ray
                table, metrics = run_inline_on_lambda(planned, offload)
                entry["fragments"] = {"ray": 0, "lambda": int(bool(offload.ran)), "inline": int(not offload.ran)}
                return self._finish(planned.plan, table, metrics, mode, offload=offload,
                                    inline="ran on Lambda from this process (one task)"
                                    if offload.ran else "ran in this process (one task, after Lambda failed)")
            # with a timeout, the runtime waits on Lambda and cancels at the deadline
        executor = self._runtime()
        from puffin import runtime

        if before_ray:  # planned before Ray ran: tasks now get their share of its memory
            cpus, mem, nodes = runtime.cluster_cpus(), runtime.memory_per_cpu(), runtime.node_count()
            planned = self._plan(text, dialect, cpus, mem, nodes, gather)
            if shape is not None:
                planned = shape(planned)
        qp, frags = planned.plan, planned.fragments
        for src in planned.used.values():
            if src.kind == "arrow":
                executor.put_table(src.source_id, src.table)
        offload = None if writing else self._offload(planned, None)
        active = offload if offload is not None and offload.active else None
        entry["fragments"] = {"ray": tasks, "lambda": 0, "inline": 0}
        table, metrics = executor.run(qp.stages, frags, analyze=mode == "analyze", timeout=timeout, offload=active,
                                      progress=progress)
        return self._finish(qp, table, metrics, mode, offload=offload)

    def history(self, last: int | None = None, since: Any = None) -> Result:
        """The query log, newest first (also the ``puffin_history()`` table in SQL)."""
        return Result(self._journal.log.history(last=last, since=since))

    # -- the Lambda offload ------------------------------------------------------------------
    def _decisions(self, planned: _Planned, free_slots: int | None) -> dict | None:
        """Which fragments go to Lambda (None: offload is off). ``free_slots`` None: ask Ray."""
        if self._lambda is None or self._lambda.offload == "never":
            return None
        from puffin.lambda_bridge.offload import decide

        if free_slots is None and self._lambda.offload == "auto":
            from puffin import runtime

            free_slots = runtime.free_cpus()
        return decide(self._lambda, planned.plan.stages, planned.fragments, free_slots or 0)

    def _offload(self, planned: _Planned, free_slots: int | None):
        """The query's ``QueryOffload``, or None when offload is off."""
        decisions = self._decisions(planned, free_slots)
        if decisions is None:
            return None
        from puffin.lambda_bridge.offload import QueryOffload

        return QueryOffload(self._lambda_invoker(), decisions)

    def _lambda_invoker(self):
        with self._cache_lock:
            if self._invoker is None:
                from puffin.lambda_bridge.invoker import Invoker

                self._invoker = Invoker(self._lambda, self._s3)
            return self._invoker

    def _ray_running(self) -> bool:
        """Whether Ray runs in this process already (without importing it to find out)."""
        if self._executor is not None:
            return True
        from puffin import launch

        return launch.started_here()

    @staticmethod
    def _finish(qp: QueryPlan, table: pa.Table, metrics: list, mode: str | None, inline: str | None = None,
                offload=None) -> Result:
        if mode == "analyze":
            by_stage: dict[int, list] = {}
            for m in metrics:
                by_stage.setdefault(m.stage_id, []).append(m)
            notes = None if offload is None else offload.notes([st.id for st in qp.stages])
            text = explain(qp.stages, by_stage, qp.planning_ms, notes=notes)
            return _text_result(text + (f"\n{inline}" if inline else ""))
        return Result(table.rename_columns(qp.names) if qp.names is not None else table)

    def explain(self, query: str, dialect: str = "duckdb") -> str:
        text, _ = split_explain(query)  # a non-string query is refused there, clearly
        return self.sql("EXPLAIN " + text, dialect).render()

    # -- Spark ---------------------------------------------------------------------------------
    def _spark_settings(self):
        from puffin.spark.settings import SparkSettings

        return SparkSettings.resolve(self._spark_options)

    def _spark(self):
        """The session's Spark client, made on first use and kept (Spark starts once)."""
        with self._cache_lock:
            if self._spark_client is None:
                from puffin.writes.spark import session_client

                self._spark_client = session_client(self._spark_settings(), self._catalogs.configured(), self._s3)
            return self._spark_client

    def close(self) -> None:
        if self._spark_client is not None:
            self._spark_client.close()
            self._spark_client = None
        self._executor = None
        if self._invoker is not None:
            self._invoker.close()
            self._invoker = None


def _wants_ray(address, target_partitions, config, s3, catalogs, lambda_=None) -> bool:
    """Whether a new session should start Ray in the background (see ``connect``)."""
    forced = os.environ.get("PUFFIN_PRESTART")
    if forced is not None:
        return forced != "0"
    distributed = target_partitions or "one_task_bytes" in (config or {})
    remote = address or os.environ.get("RAY_ADDRESS")
    return bool(remote or distributed or s3 or catalogs or lambda_)


@dataclass(frozen=True)
class _Planned:
    plan: QueryPlan
    fragments: dict[int, list]
    used: dict[str, sources.Source]


def _lambda_settings(overrides: dict[str, Any] | None):
    """The ``lambda_`` settings over the environment's ``PUFFIN_LAMBDA_*``; None when neither asks
    for anything but ``offload="never"`` (the bridge is then not even imported)."""
    if overrides is None and not any(k.startswith("PUFFIN_LAMBDA_") and v for k, v in os.environ.items()):
        return None
    if overrides is not None and not isinstance(overrides, dict):
        raise PuffinError(f"lambda_ must be a dict of settings, not {type(overrides).__name__}")
    from puffin.lambda_bridge.settings import LambdaSettings

    settings = LambdaSettings.resolve(overrides)
    return None if settings.offload == "never" and settings.plan_iceberg == "local" else settings


def _offload_notes(decisions: dict) -> dict[int, list[str]]:
    from puffin.lambda_bridge.offload import plan_notes

    return plan_notes(decisions)


def _text_result(text: str) -> Result:
    return Result(pa.table({"explain": [text]}), text=text)


_default: Connection | None = None


def connect(address: str | None = None, target_partitions: int | None = None,
            num_cpus: int | None = None, config: dict[str, float] | None = None,
            s3: dict[str, Any] | None = None, catalogs: dict[str, dict] | None = None,
            default_catalog: str | None = None, default_namespace: str | None = None,
            plan_cache: bool = True, prestart: bool | None = None,
            lambda_: dict[str, Any] | None = None, log: str | None = None, cache: str | None = None,
            cache_options: dict[str, Any] | None = None, spark: dict[str, Any] | None = None) -> Connection:
    """A new session on the Ray cluster at ``address`` (or RAY_ADDRESS), else a local Ray.

    ``s3`` overrides the AWS environment for s3:// paths: endpoint_url, region,
    access_key_id, secret_access_key, session_token, profile, max_attempts.
    ``catalogs`` names pyiceberg catalogs (``{"lake": {"type": "sql", "uri": ..., "warehouse": ...}}``);
    names not given there load from pyiceberg's own configuration. ``ns.table`` without a
    catalog uses ``default_catalog`` (default: the first configured, else "default"); with
    ``default_namespace``, a bare table name that is not registered is looked up there.
    ``plan_cache=False`` plans every query anew (the benchmark's cold runs). ``prestart=True``
    starts (or joins) Ray and warms its workers in the background while the first queries run,
    so the first distributed query does not wait for them. By default it does so when the
    session will likely need Ray: a cluster address, ``target_partitions``, object-store,
    catalog or Lambda settings, or ``one_task_bytes``. An embedded session over local files
    runs every query in-process as one DuckDB task on a one-node cluster and starts Ray only
    when a plan needs it: starting it anyway cost the first query a second of the machine's
    CPUs and the process tree 1.3 GiB. ``PUFFIN_PRESTART=1`` / ``0`` overrides the default.

    ``lambda_`` offloads scan fragments over S3 to AWS Lambda (``puffin.lambda_bridge``):
    ``{"function": "puffin-engine", "region": ..., "offload": "auto" | "always" | "never",
    "max_concurrency": ..., "endpoint_url": ..., ...}`` on top of the environment's
    ``PUFFIN_LAMBDA_*`` (see ``LambdaSettings``). Default: nothing is offloaded.

    ``log`` is where every query is logged (``puffin.querylog``): ``redis://host:port/db``,
    ``rediss://user:password@host:port/db`` (ElastiCache, TLS + AUTH) or a file; default
    ``$PUFFIN_HOME/history.jsonl`` (``~/.puffin``). ``cache`` keeps answers as Parquet on a
    directory or ``s3://bucket/prefix/`` (``puffin.cache``; ``cache_options``: ``max_bytes``,
    ``public_base_url``); a query over unchanged inputs is then answered from it. A malformed
    URL is a PuffinError here; an unreachable store is one warning and queries run.

    ``spark`` is where statements that rewrite Iceberg tables run (MERGE, UPDATE, DELETE, INSERT
    OVERWRITE, CREATE OR REPLACE) and reads asked for with ``sql(..., engine="spark")``:
    ``{"mode": "local"}`` (default: pyspark on this machine, started on first need and kept),
    ``{"mode": "emr", "cluster_id": "j-...", "staging": "s3://..."}``, ``{"mode":
    "emr-serverless", "application_id": ..., "execution_role_arn": ..., "staging": ...}`` or
    ``{"mode": "off"}`` (such statements are refused). See ``puffin.spark.settings``.
    """
    return Connection(address, target_partitions, num_cpus, config, s3, catalogs, default_catalog,
                      default_namespace, plan_cache, prestart, lambda_, log, cache, cache_options, spark)


def default_connection() -> Connection:
    global _default
    if _default is None:
        _default = Connection()
    return _default


def sql(query: str, dialect: str = "duckdb", timeout: float | None = None, progress=None) -> Result:
    return default_connection().sql(query, dialect, timeout, progress=progress)


def history(last: int | None = None, since: Any = None) -> Result:
    """The default session's query log, newest first."""
    return default_connection().history(last, since)
