"""Right answers on any data layout: TPC-H and the feature corpus against DuckDB over the same
data written in many physical shapes (tests/layouts.py), at many partition counts, with and
without forced shuffles, on a local Ray and a 3-node cluster.

The full product is the ``matrix`` marker, deselected by default (about 21,000 cases, hours on
2 cores)::

    pytest -m matrix tests/sql/test_layouts.py                          # everything
    pytest -m matrix tests/sql/test_layouts.py -k "tpch and parts4 and local"   # a slice

Test ids read ``<tpch-qNN|feature-sNN>-<layout>-p<N|default>[-shuffle]-<local|cluster>``. The
default run takes a fixed, seeded sample of the product in which every layout meets every
partition count, every TPC-H query runs on several layouts, every feature statement runs at
least once, and a few cases run on the cluster. Results must match DuckDB's values, column
names and types.

Empty inputs: every TPC-H query over 0-row tables (in memory and as Parquet files) and over
real files behind filters that select nothing must return DuckDB's result, schema included.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pyarrow as pa
import pytest

import puffin
from puffin.demo import TABLES
from puffin.testing import assert_same_result, has_order_by
from tests.conftest import tpch_query
from tests.layouts import EMPTY_LAYOUTS, LAYOUTS, TPCH, LayoutCache, features_dataset, select_nothing
from tests.sql.test_features import _statements, _tables

FEATURES = features_dataset(_tables)
DATASETS = {"tpch": TPCH, "features": FEATURES}
FEATURE_STATEMENTS = _statements()
PARTITIONS = (1, 2, 3, 4, 16, 64, None)  # None: Puffin's default choice
BACKENDS = ("local", "cluster")
SHUFFLE = {"broadcast_bytes": 0, "replicate_bytes": 0, "range_sort_rows": 0}  # every exchange a shuffle
QUERY_TIMEOUT_S = 300
SEED = 7
TPCH_PER_SETTING = 3  # default sample: TPC-H queries per (layout, partitions)
FEATURES_PER_SETTING = 2  # ... and feature statements


@dataclass(frozen=True)
class Case:
    backend: str
    layout: str
    partitions: int | None
    shuffle: bool
    dataset: str
    query: int  # TPC-H query number, or index into features.sql

    def __str__(self) -> str:
        q = f"tpch-q{self.query:02d}" if self.dataset == "tpch" else f"feature-s{self.query:02d}"
        p = "pdefault" if self.partitions is None else f"p{self.partitions}"
        return f"{q}-{self.layout}-{p}{'-shuffle' if self.shuffle else ''}-{self.backend}"

    def order(self) -> tuple:
        """Grouped by backend (each switch restarts Ray), then layout and settings."""
        p = 0 if self.partitions is None else self.partitions
        return (BACKENDS.index(self.backend), self.layout, p, self.shuffle, self.dataset, self.query)

    @property
    def sql(self) -> str:
        return tpch_query(self.query) if self.dataset == "tpch" else FEATURE_STATEMENTS[self.query]


def _settings() -> list[tuple[int | None, bool]]:
    """Partition counts, each with forced shuffles too where there is more than one partition."""
    out = []
    for p in PARTITIONS:
        out.append((p, False))
        if p is not None and p > 1:
            out.append((p, True))
    return out


def _queries(dataset: str) -> list[int]:
    return list(range(1, 23)) if dataset == "tpch" else list(range(len(FEATURE_STATEMENTS)))


def full_matrix() -> list[Case]:
    return [
        Case(b, layout, p, shuffle, ds, q)
        for b in BACKENDS
        for layout in LAYOUTS
        for p, shuffle in _settings()
        for ds in DATASETS
        for q in _queries(ds)
    ]


def sample(seed: int = SEED) -> list[Case]:
    """A deterministic sample: every (layout, partitions) pair runs 3 TPC-H queries and 2 feature
    statements (forced shuffles on a coin flip), every TPC-H query runs on >= 3 layouts, every
    feature statement at least once, and 2 TPC-H queries per layout plus a few statements run on
    the cluster."""
    rng = random.Random(seed)
    cases: set[Case] = set()
    tpch_cycle: list[int] = []
    feature_cycle: list[int] = []

    def draw(cycle: list[int], dataset: str) -> int:
        if not cycle:
            cycle.extend(rng.sample(_queries(dataset), len(_queries(dataset))))
        return cycle.pop()

    for layout in LAYOUTS:
        for p in PARTITIONS:
            shuffle = p is not None and p > 1 and rng.random() < 0.5
            for _ in range(TPCH_PER_SETTING):
                cases.add(Case("local", layout, p, shuffle, "tpch", draw(tpch_cycle, "tpch")))
            for _ in range(FEATURES_PER_SETTING):
                cases.add(Case("local", layout, p, shuffle, "features", draw(feature_cycle, "features")))
    for q in _queries("tpch"):
        layouts = {c.layout for c in cases if c.dataset == "tpch" and c.query == q}
        while len(layouts) < 3:
            layout = rng.choice([x for x in LAYOUTS if x not in layouts])
            p = rng.choice(PARTITIONS)
            cases.add(Case("local", layout, p, p is not None and p > 1, "tpch", q))
            layouts.add(layout)
    for layout in LAYOUTS:
        for _ in range(2):
            p = rng.choice([2, 3, 4, 16])
            cases.add(Case("cluster", layout, p, True, "tpch", rng.choice(_queries("tpch"))))
    for layout in rng.sample(LAYOUTS, 6):
        cases.add(Case("cluster", layout, 4, True, "features", rng.choice(_queries("features"))))
    return sorted(cases, key=Case.order)


SAMPLE = sample()
MATRIX = full_matrix()


class Runner:
    """Layouts, connections (one per Ray start, layout, partitions and shuffle setting) and DuckDB
    answers, all reused across tests: Ray is process-global and planning is cheap."""

    def __init__(self, cache: LayoutCache, ray_backends):
        self.cache = cache
        self.ray = ray_backends
        self._cons: dict[tuple, puffin.Connection] = {}
        self._generation = None
        self._answers: dict[tuple[str, str], pa.Table] = {}

    def connection(self, backend: str, layout, partitions: int | None, shuffle: bool) -> puffin.Connection:
        self.ray.use(backend)
        if self._generation != self.ray.generation:  # a new Ray: earlier connections hold stale objects
            self._cons.clear()
            self._generation = self.ray.generation
        key = (layout.id, partitions, shuffle)
        if key not in self._cons:
            con = puffin.connect(target_partitions=partitions, config=SHUFFLE if shuffle else None, s3=layout.s3)
            layout.register(con)
            self._cons[key] = con
        return self._cons[key]

    def expected(self, layout, sql: str) -> pa.Table:
        key = (layout.id, sql)
        if key not in self._answers:
            self._answers[key] = layout.oracle().sql(sql).to_arrow_table()
        return self._answers[key]

    def check(self, layout, sql: str, backend: str, partitions: int | None, shuffle: bool, label: str) -> None:
        want = self.expected(layout, sql)
        con = self.connection(backend, layout, partitions, shuffle)
        got = con.sql(sql, timeout=QUERY_TIMEOUT_S).arrow()
        assert_same_result(got, want, ordered=has_order_by(sql), label=label, sql=sql)


@pytest.fixture(scope="session")
def layout_cache(tmp_path_factory) -> LayoutCache:
    return LayoutCache(tmp_path_factory.getbasetemp() / "layouts")


@pytest.fixture(scope="module")
def runner(layout_cache, ray_backends) -> Runner:
    return Runner(layout_cache, ray_backends)


def _layout(request, runner: Runner, dataset: str, name: str):
    def s3():  # the S3 server starts only when an s3 layout is first needed
        return request.getfixturevalue("s3_server"), request.getfixturevalue("s3_bucket")

    return runner.cache.get(DATASETS[dataset], name, s3)


def _run_case(request, runner: Runner, case: Case) -> None:
    layout = _layout(request, runner, case.dataset, case.layout)
    runner.check(layout, case.sql, case.backend, case.partitions, case.shuffle, label=str(case))


@pytest.mark.parametrize("case", SAMPLE, ids=str)
def test_layout_sample(request, runner, case):
    _run_case(request, runner, case)


@pytest.mark.matrix
@pytest.mark.parametrize("case", MATRIX, ids=str)
def test_layout_matrix(request, runner, case):
    _run_case(request, runner, case)


def test_sample_covers_the_matrix():
    """The default sample's promises (a failure here means the sampler changed, not the engine)."""
    tpch = [c for c in SAMPLE if c.dataset == "tpch"]
    assert {(c.layout, c.partitions) for c in tpch} == {(x, p) for x in LAYOUTS for p in PARTITIONS}
    for q in range(1, 23):
        assert len({c.layout for c in tpch if c.query == q}) >= 3, q
    assert {c.query for c in SAMPLE if c.dataset == "features"} == set(range(len(FEATURE_STATEMENTS)))
    assert {c.layout for c in SAMPLE if c.backend == "cluster"} == set(LAYOUTS)
    assert any(c.shuffle for c in SAMPLE) and set(SAMPLE) <= set(MATRIX)


# -- empty inputs -------------------------------------------------------------------------------
EMPTY_VARIANTS = (*EMPTY_LAYOUTS, "filtered")  # 0-row tables, or a filter selecting nothing
EMPTY_SETTINGS = [(1, False), (4, True), (16, False)]


def _first_columns(runner: Runner) -> dict[str, str]:
    tables = runner.cache.tables(TPCH)
    return {t: tables[t].column_names[0] for t in TABLES}


def _check_empty(request, runner: Runner, q: int, variant: str, partitions, shuffle, backend="local") -> None:
    sql = tpch_query(q)
    if variant == "filtered":
        layout = _layout(request, runner, "tpch", "parts4")
        sql = select_nothing(sql, _first_columns(runner))
    else:
        layout = _layout(request, runner, "tpch", variant)
    want = runner.expected(layout, sql)
    assert want.num_rows <= 1  # nothing, or one row of a global aggregate over nothing
    label = f"q{q:02d} {variant} p{partitions}{' shuffle' if shuffle else ''}"
    runner.check(layout, sql, backend, partitions, shuffle, label=label)


@pytest.mark.parametrize(("partitions", "shuffle"), EMPTY_SETTINGS,
                         ids=[f"p{p}{'-shuffle' if s else ''}" for p, s in EMPTY_SETTINGS])
@pytest.mark.parametrize("variant", EMPTY_VARIANTS)
@pytest.mark.parametrize("q", range(1, 23), ids=lambda q: f"q{q:02d}")
def test_empty_inputs_give_duckdbs_empty_result(request, runner, q, variant, partitions, shuffle):
    _check_empty(request, runner, q, variant, partitions, shuffle)


EMPTY_MATRIX = [  # backend outermost: each switch restarts Ray
    (b, p, s, v, q) for b in BACKENDS for p, s in _settings() for v in EMPTY_VARIANTS for q in range(1, 23)
    if b != "local" or (p, s) not in EMPTY_SETTINGS
]


@pytest.mark.matrix
@pytest.mark.parametrize(("backend", "partitions", "shuffle", "variant", "q"), EMPTY_MATRIX,
                         ids=[f"q{q:02d}-{v}-p{'default' if p is None else p}{'-shuffle' if s else ''}-{b}" for b, p, s, v, q in EMPTY_MATRIX])
def test_empty_inputs_matrix(request, runner, q, variant, partitions, shuffle, backend):
    _check_empty(request, runner, q, variant, partitions, shuffle, backend)
