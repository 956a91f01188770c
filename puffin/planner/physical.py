"""Cut the logical plan into stages separated by exchanges.

Walking bottom-up, each operator either joins the open pipeline of its input (a *fragment in
the making*) or closes it into a stage whose output is exchanged: hash-partitioned on keys,
broadcast to every task of the consumer, or gathered into one partition. Small inputs never
leave their consumer's stage: a small scan is read whole by every task that needs it, and when
everything is small the whole query is one stage, one task (the fast path for tiny plans).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pyarrow as pa
import sqlglot
from sqlglot import exp

from puffin.planner.logical import (
    Aggregate,
    Exchange,
    Filter,
    Join,
    Limit,
    Native,
    Plan,
    Project,
    Scan,
    SetOp,
    Sort,
    Values,
    Window,
    col,
    conjuncts,
    fresh,
)
from puffin.planner.sqlgen import input_name, to_sql
from puffin.planner.stats import rows, size
from puffin.planner.types import read_schema, typed_sql
from puffin.sources import ScanUnit


@dataclass(frozen=True)
class Output:
    mode: str  # hash | broadcast | gather | result
    keys: tuple[str, ...] = ()
    partitions: int = 1

    def describe(self) -> str:
        if self.mode == "hash":
            return f"hash({', '.join(self.keys)}) x {self.partitions}"
        if self.mode == "range":
            return f"range x {self.partitions}"
        if self.mode == "sampled":
            return f"forward + sample({self.keys[0]})"
        return self.mode


@dataclass(frozen=True, eq=False)
class ScanInput:
    name: str
    scan: Scan
    per_task: tuple[tuple[ScanUnit, ...], ...]
    split: bool
    note: str = ""  # what planning pruned (Iceberg snapshots and files)


@dataclass(frozen=True, eq=False)
class Stage:
    id: int
    plan: Plan
    tasks: int
    scans: tuple[ScanInput, ...]
    inputs: tuple[Exchange, ...]
    output: Output
    schema: pa.Schema | None  # what every task returns, whatever share of the data it read (None: PIVOT)
    sql: str = ""  # the DuckDB statement every task runs

    def delivers(self, mode: str, keys: tuple[str, ...] = ()) -> Exchange:
        """The exchange leaf through which a consumer reads this stage's output."""
        names = self.plan.schema
        if mode == "range":  # the partition-id column is dropped by the split
            names = tuple(n for n in names if n != keys[0]) if keys else names
        elif mode == "sample":
            names = keys
        types = pa.schema([self.schema.field(n) for n in names])
        return Exchange(self.id, mode, names, keys if mode not in ("sample", "range") else (), types)


@dataclass(frozen=True)
class Settings:
    partitions: int  # hash exchange fan-out
    fixed: bool  # True when the user set target_partitions
    cpus: int
    broadcast_bytes: float = 32e6
    replicate_bytes: float = 16e6
    bytes_per_scan_task: float = 64e6
    range_sort_rows: float = 2e6  # ORDER BY over more (estimated) rows range-partitions
    # inputs (local files, in-memory tables) up to this size each run the whole query in one
    # DuckDB task: the session sets no limit on a one-node cluster (every exchange between
    # processes of one machine is pure overhead there) and 64 MB otherwise
    one_task_bytes: float = 64e6


@dataclass(eq=False)
class Frag:
    """A pipeline not yet closed into a stage."""

    plan: Plan
    tasks: int
    keys: tuple[str, ...] | None  # output hash-partitioned on these (None: arbitrary)
    scans: list[tuple[Scan, bool]] = field(default_factory=list)  # (scan, split across tasks)
    inputs: list[Exchange] = field(default_factory=list)

    def with_plan(self, plan: Plan, keys: tuple[str, ...] | None = ...) -> Frag:  # type: ignore[assignment]
        return Frag(plan, self.tasks, self.keys if keys is ... else keys, self.scans, self.inputs)

    @property
    def self_contained(self) -> bool:
        return not self.inputs


def _group_units(units: tuple[ScanUnit, ...], n: int) -> tuple[tuple[ScanUnit, ...], ...]:
    """Cut units into at most n contiguous groups of about equal bytes (files stay together
    where they can). Every group gets at least one unit: no task reads nothing while another
    reads two files."""
    n = max(1, min(n, len(units)))
    weight = [max(u.bytes, 1) for u in units]
    groups, i, remaining = [], 0, float(sum(weight))
    for g in range(n):
        tasks_left = n - g
        if tasks_left == 1:
            groups.append(tuple(units[i:]))
            break
        target = remaining / tasks_left
        j, acc = i + 1, weight[i]
        while j <= len(units) - tasks_left and acc + weight[j] / 2 <= target:
            acc += weight[j]
            j += 1
        groups.append(tuple(units[i:j]))
        remaining -= acc
        i = j
    return tuple(groups)


def _mergeable(a: Frag, b: Frag) -> bool:
    return a.tasks == b.tasks == 1


def _equi_keys(cond, left: set[str], right: set[str]) -> tuple[list[str], list[str]]:
    lk, rk = [], []
    for c in conjuncts(cond):
        if isinstance(c, exp.EQ) and isinstance(c.this, exp.Column) and isinstance(c.expression, exp.Column):
            a, b = c.this.name, c.expression.name
            if a in left and b in right:
                lk.append(a), rk.append(b)
            elif b in left and a in right:
                lk.append(b), rk.append(a)
    return lk, rk


DECOMPOSABLE = (exp.Sum, exp.Count, exp.Avg, exp.Min, exp.Max)


def _decomposable(e: exp.Expression) -> bool:
    return isinstance(e, DECOMPOSABLE) and not isinstance(e.this, exp.Distinct)


def _split_agg(name: str, e: exp.Expression) -> tuple[list[tuple[str, exp.Expression]], exp.Expression]:
    """(partial aggregates, final expression over them) for one decomposable aggregate."""
    if isinstance(e, exp.Avg):
        s, c = f"{name}__sum", f"{name}__count"
        final = exp.Div(
            this=exp.Cast(this=exp.Sum(this=col(s)), to=exp.DataType.build("DOUBLE")),
            expression=exp.Nullif(this=exp.Sum(this=col(c)), expression=exp.Literal.number(0)),
        )
        return [(s, exp.Sum(this=e.this.copy())), (c, exp.Count(this=e.this.copy()))], final
    if isinstance(e, exp.Count):
        return [(name, e.copy())], exp.Cast(this=exp.Sum(this=col(name)), to=exp.DataType.build("BIGINT"))
    return [(name, e.copy())], type(e)(this=col(name))


class PhysicalPlanner:
    def __init__(self, settings: Settings):
        self.s = settings
        self.stages: list[Stage] = []
        self._units: dict[int, tuple[tuple[ScanUnit, ...], str]] = {}

    def units(self, scan: Scan) -> tuple[tuple[ScanUnit, ...], str]:
        """The units a scan reads; Iceberg tables are planned here, with the pushed filters."""
        if id(scan) not in self._units:
            ice = scan.source.iceberg
            if ice is None:
                self._units[id(scan)] = (scan.source.units, "")
            else:
                from puffin.iceberg import to_row_filter

                units = ice.plan(to_row_filter(scan.filters, scan.column_map))
                considered = len(scan.source.units)
                size_ = sum(u.bytes for u in units)
                note = (f"snapshot {ice.snapshot_id}: {len(units)} of {considered} files, "
                        f"{considered - len(units)} pruned, {size_} bytes"
                        + (f", {units.where}" if getattr(units, "where", "") else ""))
                self._units[id(scan)] = (units, note)
        return self._units[id(scan)]

    def plan(self, root: Plan, gather: bool = True) -> list[Stage]:
        """The stages; the last returns one partition, or with ``gather=False`` (a write, whose
        tasks each write their share) as many as the plan's last operator has tasks."""
        f = self.visit(root)
        if gather and f.tasks > 1:
            f = self.exchange(f, "gather")
        self.cut(f, Output("result"))
        return self.stages

    # -- stage boundaries --------------------------------------------------------------------
    def cut(self, f: Frag, output: Output) -> Stage:
        scans = []
        for k, (scan, split) in enumerate(f.scans):
            units, note = self.units(scan)
            per_task = _group_units(units, f.tasks) if split else (units,) * f.tasks
            if split and len(per_task) < f.tasks:
                per_task = per_task + ((),) * (f.tasks - len(per_task))
            scans.append(ScanInput(f"scan_{k}", scan, per_task, split, note))
        # the stage's statement, rendered once: typed here, run by every fragment
        sql = to_sql(f.plan, {id(s.scan): s.name for s in scans})
        tables = {s.name: read_schema(s.scan) for s in scans} | {input_name(x.stage_id): x.types for x in f.inputs}
        schema = typed_sql(f.plan, sql, tables)
        stage = Stage(len(self.stages), f.plan, f.tasks, tuple(scans), tuple(f.inputs), output, schema, sql)
        self.stages.append(stage)
        return stage

    def exchange(self, f: Frag, mode: str, keys: tuple[str, ...] = ()) -> Frag:
        n = self.s.partitions if mode == "hash" else 1
        stage = self.cut(f, Output(mode, keys, n))
        leaf = stage.delivers(mode, keys)
        return Frag(leaf, n if mode == "hash" else 1, keys if mode == "hash" else None, [], [leaf])

    def broadcast(self, f: Frag) -> Frag:
        """``f`` made available whole to every task: inline it if small, else broadcast it."""
        if f.self_contained and sum(s.source.bytes for s, _ in f.scans) <= self.s.replicate_bytes:
            return Frag(f.plan, 1, None, [(s, False) for s, _ in f.scans], [])
        stage = self.cut(f, Output("broadcast"))
        leaf = stage.delivers("broadcast")
        return Frag(leaf, 1, None, [], [leaf])

    @staticmethod
    def combine(a: Frag, b: Frag, plan: Plan, tasks: int, keys) -> Frag:
        return Frag(plan, tasks, keys, a.scans + b.scans, a.inputs + b.inputs)

    def scan_tasks(self, scan: Scan) -> int:
        units = len(self.units(scan)[0])
        if self.s.fixed:
            return max(1, min(units, self.s.partitions))
        # one task per CPU is enough parallelism; more only when each would read too much
        want = math.ceil(scan.source.bytes / self.s.bytes_per_scan_task)
        enough = max(self.s.cpus, math.ceil(scan.source.bytes / (8 * self.s.bytes_per_scan_task)))
        return max(1, min(units, want, enough))

    # -- operators ---------------------------------------------------------------------------
    def visit(self, p: Plan) -> Frag:
        method = getattr(self, f"visit_{type(p).__name__.lower()}")
        return method(p)

    def visit_scan(self, p: Scan) -> Frag:
        return Frag(p, self.scan_tasks(p), None, [(p, True)], [])

    def visit_values(self, p: Values) -> Frag:
        return Frag(p, 1, None, [], [])

    def visit_filter(self, p: Filter) -> Frag:
        c = self.visit(p.child)
        return c.with_plan(p.with_children(c.plan))

    def visit_project(self, p: Project) -> Frag:
        c = self.visit(p.child)
        keys = None
        if c.keys is not None:
            renamed = {e.name: n for n, e in p.exprs if isinstance(e, exp.Column)}
            if all(k in renamed for k in c.keys):
                keys = tuple(renamed[k] for k in c.keys)
        return c.with_plan(p.with_children(c.plan), keys)

    def visit_join(self, p: Join) -> Frag:
        left, right, kind, cond = p.left, p.right, p.kind, p.condition
        if kind in ("inner", "cross") and size(left) < size(right):
            left, right = right, left
        L, R = self.visit(left), self.visit(right)
        if _mergeable(L, R):
            return self.combine(L, R, Join(L.plan, R.plan, kind, cond), 1, None)
        lk, rk = _equi_keys(cond, set(left.schema), set(right.schema))
        small = size(right) <= self.s.broadcast_bytes
        if kind != "full" and (small or not lk):
            B = self.broadcast(R)
            return self.combine(L, B, Join(L.plan, B.plan, kind, cond), L.tasks, L.keys)
        if not lk:  # FULL JOIN without an equality: everything in one place
            L = self.exchange(L, "gather") if L.tasks > 1 else L
            R = self.exchange(R, "gather") if R.tasks > 1 else R
            return self.combine(L, R, Join(L.plan, R.plan, kind, cond), 1, None)
        n = self.s.partitions
        if not (L.keys == tuple(lk) and L.tasks == n):
            L = self.exchange(L, "hash", tuple(lk))
        if not (R.keys == tuple(rk) and R.tasks == n):
            R = self.exchange(R, "hash", tuple(rk))
        keys = tuple(lk) if kind != "full" else None
        return self.combine(L, R, Join(L.plan, R.plan, kind, cond), n, keys)

    def visit_aggregate(self, p: Aggregate) -> Frag:
        c = self.visit(p.child)
        plain = {e.name: n for n, e in p.keys if isinstance(e, exp.Column)}
        if c.tasks == 1:
            return c.with_plan(p.with_children(c.plan), None)
        if c.keys is not None and p.keys and all(k in plain for k in c.keys):
            return c.with_plan(p.with_children(c.plan), tuple(plain[k] for k in c.keys))
        names = tuple(n for n, _ in p.keys)
        if all(_decomposable(e) for _, e in p.aggs):
            partial, final = [], []
            for name, e in p.aggs:
                parts, fin = _split_agg(name, e)
                partial += parts
                final.append((name, fin))
            c = c.with_plan(Aggregate(c.plan, p.keys, tuple(partial), "partial"))
            x = self.exchange(c, "hash", names) if names else self.exchange(c, "gather")
            keys = tuple((n, col(n)) for n in names)
            return x.with_plan(Aggregate(x.plan, keys, tuple(final), "final"))
        if any(not isinstance(e, exp.Column) for _, e in p.keys):
            extra = tuple((n, e) for n, e in p.keys if not isinstance(e, exp.Column))
            c = c.with_plan(Project(c.plan, tuple((n, col(n)) for n in c.plan.schema) + extra))
            p = Aggregate(c.plan, tuple((n, col(n) if not isinstance(e, exp.Column) else e) for n, e in p.keys), p.aggs)
        key_cols = tuple(e.name for _, e in p.keys)
        x = self.exchange(c, "hash", key_cols) if key_cols else self.exchange(c, "gather")
        return x.with_plan(p.with_children(x.plan), tuple(n for n, _ in p.keys) or None)

    def visit_window(self, p: Window) -> Frag:
        c = self.visit(p.child)
        parts = {tuple(e.name if isinstance(e, exp.Column) else None for e in w.args.get("partition_by") or [])
                 for _, w in p.windows}
        keys = parts.pop() if len(parts) == 1 else ()
        if c.tasks > 1:
            if keys and None not in keys:
                if not (c.keys is not None and set(c.keys) <= set(keys) and c.tasks == self.s.partitions):
                    c = self.exchange(c, "hash", keys)
            else:
                c = self.exchange(c, "gather")
        return c.with_plan(p.with_children(c.plan))

    def visit_sort(self, p: Sort) -> Frag:
        """ORDER BY: small inputs sort per task and merge in one; large ones range-partition."""
        c = self.visit(p.child)
        if c.tasks == 1:
            return c.with_plan(p.with_children(c.plan), None)
        first = p.keys[0].this
        if rows(p.child) < self.s.range_sort_rows or self.s.partitions == 1 or not isinstance(first, exp.Column):
            g = self.exchange(c.with_plan(Sort(c.plan, p.keys)), "gather")
            return g.with_plan(p.with_children(g.plan), None)
        return self._range_sort(c, p, first.name)

    def _range_sort(self, c: Frag, p: Sort, key: str) -> Frag:
        """Sample the first sort key, cut it at quantiles, send each row to its range, sort
        each range in its own task; the ranges then concatenate in order."""
        n = self.s.partitions
        source = self.cut(c, Output("sampled", (key,), 2))
        data = source.delivers("forward")
        sampled = source.delivers("sample", (key,))
        bounds_col, pid_col = fresh("__bounds", data.names), fresh("__pid", data.names)
        fractions = exp.Array(expressions=[exp.Literal.number(i / n) for i in range(1, n)])
        quantiles = exp.Anonymous(this="quantile_disc", expressions=[col(key), fractions])
        bounds_plan = Aggregate(sampled, (), ((bounds_col, quantiles),))
        bounds = self.cut(Frag(bounds_plan, 1, None, [], [sampled]), Output("broadcast")).delivers("broadcast")
        ordered = p.keys[0]
        below = "len(list_filter(coalesce(:b, []), x -> x < :k))"
        pid = below if not ordered.args.get("desc") else f"{n - 1} - {below}"
        null_pid = 0 if ordered.args.get("nulls_first") else n - 1
        template = sqlglot.parse_one(f"CASE WHEN :k IS NULL THEN {null_pid} ELSE {pid} END", read="duckdb")
        pid_expr = exp.replace_placeholders(template, k=col(key), b=col(bounds_col))
        tagged = Project(Join(data, bounds, "cross"), tuple((name, col(name)) for name in data.names)
                         + ((pid_col, pid_expr),))
        split = self.cut(Frag(tagged, c.tasks, None, [], [data, bounds]), Output("range", (pid_col,), n))
        ranges = split.delivers("range", (pid_col,))
        return Frag(Sort(ranges, p.keys), n, None, [], [ranges])

    def visit_limit(self, p: Limit) -> Frag:
        child = p.child
        inner = child.child if isinstance(child, Sort) else child
        c = self.visit(inner)
        if c.tasks > 1:
            local: Plan = child.with_children(c.plan) if isinstance(child, Sort) else c.plan
            if p.limit is not None:
                local = Limit(local, p.limit + p.offset, 0)
            c = self.exchange(c.with_plan(local), "gather")
        body = child.with_children(c.plan) if isinstance(child, Sort) else c.plan
        return c.with_plan(Limit(body, p.limit, p.offset), None)

    def visit_native(self, p: Native) -> Frag:
        """One task runs the whole statement; inputs read in parallel are gathered to it."""
        kids = []
        for child in p.inputs:
            f = self.visit(child)
            kids.append(self.exchange(f, "gather") if f.tasks > 1 else f)
        plan = p.with_children(*(f.plan for f in kids))
        return Frag(plan, 1, None, [s for f in kids for s in f.scans], [x for f in kids for x in f.inputs])

    def visit_setop(self, p: SetOp) -> Frag:
        L, R = self.visit(p.left), self.visit(p.right)
        if not _mergeable(L, R):
            L = self.exchange(L, "hash", L.plan.schema)
            R = self.exchange(R, "hash", R.plan.schema)
        keys = L.plan.schema if L.tasks > 1 else None
        return self.combine(L, R, SetOp(L.plan, R.plan, p.kind, p.distinct), L.tasks, keys)
