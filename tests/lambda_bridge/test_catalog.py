"""The Catalog function plans Iceberg scans; the Engine function reads Iceberg fragments."""

from __future__ import annotations

import dataclasses
import pickle
import warnings

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import puffin
from puffin.lambda_bridge import Invoker, LambdaSettings, offloadable
from puffin.operators.fragment import run_fragment
from puffin.storage import S3Config
from tests.lambda_bridge.conftest import FUNCTION_TIMEOUT_S, new_query_id, s3_options, scan_fragments


@pytest.fixture(scope="module")
def lake(tmp_path_factory, s3_server, s3_bucket):
    from pyiceberg.catalog.sql import SqlCatalog

    tmp = tmp_path_factory.mktemp("lambda-lake")
    props = {"type": "sql", "uri": f"sqlite:///{tmp}/cat.db", "warehouse": f"s3://{s3_bucket}/lambda-lake",
             "s3.endpoint": s3_server.endpoint, "s3.access-key-id": s3_server.access_key,
             "s3.secret-access-key": s3_server.secret_key, "s3.region": s3_server.region}
    cat = SqlCatalog("lake", **props)
    cat.create_namespace("db")
    tbl = cat.create_table("db.t", schema=pa.schema([("id", pa.int64()), ("k", pa.string())]))
    for start in (0, 100, 200):  # three appends: three data files
        tbl.append(pa.table({"id": pa.array(range(start, start + 100), pa.int64()),
                             "k": [f"k{i % 5}" for i in range(start, start + 100)]}))
    return {"lake": props}


@pytest.fixture
def catalog_invoker(local_lambda, s3_server):
    s = LambdaSettings.resolve({"endpoint_url": local_lambda.endpoint, "catalog_function": "puffin-catalog",
                                "function_timeout": FUNCTION_TIMEOUT_S}, env={})
    inv = Invoker(s, S3Config.resolve(s3_options(s3_server)))
    yield inv
    inv.close()


def test_catalog_function_plans_with_the_pushed_filter(lake, catalog_invoker):
    from pyiceberg.expressions import GreaterThanOrEqual

    units, files, info = catalog_invoker.plan_iceberg("lake", lake["lake"], "db.t")
    assert len(units) == len(files) == 3 and sum(u.rows for u in units) == 300
    assert {u.path for u in units} == {f["path"] for f in files} and info.function == "puffin-catalog"
    pruned, _, _ = catalog_invoker.plan_iceberg("lake", lake["lake"], "db.t", GreaterThanOrEqual("id", 150))
    assert len(pruned) == 2 and all(u.task is not None for u in pruned)  # the first file's ids are < 100


def test_engine_function_reads_iceberg_fragments(lake, s3_server, invoker):
    con = puffin.connect(target_partitions=2, catalogs=lake, s3=s3_options(s3_server), prestart=False)
    frs = scan_fragments(con, "SELECT k, count(*) AS n, sum(id) AS s FROM lake.db.t GROUP BY k")
    qid = new_query_id()
    for f in frs:
        assert offloadable(f)[0]
        parts, _, _ = invoker.invoke(f, qid)
        local, _ = run_fragment(f, {}, None)
        assert len(parts) == len(local)
        for a, b in zip(parts, local):
            keys = [(c, "ascending") for c in a.column_names]
            assert a.sort_by(keys).equals(b.sort_by(keys))


def test_engine_function_caches_iceberg_files_and_applies_their_deletes(lake, s3_server, invoker):
    from pyiceberg.catalog.sql import SqlCatalog

    from tests.iceberg.delete_writer import add_position_deletes

    tbl = SqlCatalog("lake", **lake["lake"]).create_table("db.d", schema=pa.schema([("id", pa.int64())]))
    for start in (0, 100):
        tbl.append(pa.table({"id": pa.array(range(start, start + 100), pa.int64())}))
    first = min(t.file.file_path for t in tbl.scan().plan_files())
    with tbl.io.new_input(first).open() as fin:
        ids = pq.read_table(fin)["id"].to_pylist()
    add_position_deletes(tbl, {first: [0, 3]})  # merge-on-read: a delete file names the data file by path
    con = puffin.connect(target_partitions=1, catalogs=lake, s3=s3_options(s3_server), prestart=False)
    (f,) = scan_fragments(con, "SELECT count(*) AS n, sum(id) AS s FROM lake.db.d")
    files = 3  # two data files and one delete file
    local, _ = run_fragment(f, {}, None)
    assert [tuple(r.values()) for r in local[0].to_pylist()] == [(198, sum(range(200)) - ids[0] - ids[3])]
    for hits in (0, files):  # one at a time: the same warm instance, its cache filled by the first
        parts, _, info = invoker.invoke(f, new_query_id())
        assert parts[0].equals(local[0])
        assert (info.cache_hits, info.cache_misses) == (hits, files - hits), info


# -- the driver planning through the Catalog function ----------------------------------------------

SQL = "SELECT k, count(*) AS n, sum(id) AS s FROM lake.db.t WHERE id >= 150 GROUP BY k ORDER BY k"


def _table(lake, s3_server):
    """``lake.db.t`` resolved as the session resolves it (pyiceberg reads its metadata here)."""
    from sqlglot import exp

    from puffin.iceberg import Catalogs

    src = Catalogs(lake, S3Config.resolve(s3_options(s3_server))).resolve(exp.to_table("lake.db.t"))
    return src.iceberg


def _paths(units) -> list[str]:
    return sorted(u.path for u in units)


def test_the_planner_lists_a_snapshots_files_on_the_function(lake, s3_server, catalog_invoker):
    from pyiceberg.expressions import GreaterThanOrEqual

    from puffin.lambda_bridge.catalog import CatalogPlanner, PlannedUnits, plan_locally

    table = _table(lake, s3_server)
    planner = CatalogPlanner(catalog_invoker)
    row_filter = GreaterThanOrEqual("id", 150)
    units = planner(table, row_filter)
    assert isinstance(units, PlannedUnits) and units.where.startswith("planned on Lambda puffin-catalog (")
    local = plan_locally(table, row_filter)
    assert _paths(units) == _paths(local) and len(units) == 2  # pruned there as here
    assert [u.rows for u in sorted(units, key=lambda u: u.path)] == [u.rows for u in sorted(local, key=lambda u: u.path)]
    assert planner.planned == 1 and planner.fell_back == 0 and planner.last.function == "puffin-catalog"
    assert type(pickle.loads(pickle.dumps(units))) is tuple  # nothing of the bridge travels with a plan
    # the units read as locally planned ones do: a fragment over them reads those two files
    con = puffin.connect(target_partitions=2, catalogs=lake, s3=s3_options(s3_server), prestart=False)
    frag = scan_fragments(con, "SELECT count(*) AS n, sum(id) AS s FROM lake.db.t")[0]
    read = dataclasses.replace(frag.scans[0], units=tuple(units))
    out, _ = run_fragment(dataclasses.replace(frag, scans=(read,)), {}, None)
    assert [tuple(r.values()) for r in out[0].to_pylist()] == [(200, sum(range(100, 300)))]  # partial count, sum


def test_a_throttled_catalog_function_is_retried_then_planned_here(lake, s3_server, catalog_invoker, local_lambda):
    from puffin.lambda_bridge.catalog import CatalogPlanner

    table = _table(lake, s3_server)
    planner = CatalogPlanner(catalog_invoker)
    try:
        local_lambda.control("faults", {"function": "puffin-catalog", "throttle": 2})
        units = planner(table, None)  # third attempt answers
        assert "planned on Lambda puffin-catalog" in units.where and "2 retries" in units.where
        local_lambda.control("faults", {"function": "puffin-catalog", "service": 3})
        units = planner(table, None)  # three 500s: the plan is made here
        assert units.where.startswith("planned here: puffin-catalog service: ServiceException") and \
            units.where.endswith("[3 attempts]")
        assert len(units) == 3 and planner.fell_back == 1
    finally:
        local_lambda.control("faults", {"function": "puffin-catalog", "throttle": 0, "service": 0})


def test_a_missing_catalog_function_warns_once_or_names_the_setting(lake, s3_server, local_lambda):
    from puffin.errors import PuffinError
    from puffin.lambda_bridge.catalog import CatalogPlanner
    from puffin.lambda_bridge.offload import LambdaFallbackWarning

    table = _table(lake, s3_server)
    s = LambdaSettings.resolve({"endpoint_url": local_lambda.endpoint, "catalog_function": "no-such-catalog",
                                "plan_iceberg": "lambda", "offload": "auto"}, env={})
    inv = Invoker(s, S3Config.resolve(s3_options(s3_server)))
    try:
        planner = CatalogPlanner(inv)
        with pytest.warns(LambdaFallbackWarning, match="no-such-catalog.*not found.*'catalog_function'"):
            units = planner(table, None)
        assert len(units) == 3 and "planned here: no-such-catalog not_found" in units.where
        with warnings.catch_warnings():
            warnings.simplefilter("error", LambdaFallbackWarning)  # once per connection
            assert len(planner(table, None)) == 3
        inv.settings = s.replace(offload="always")
        with pytest.raises(PuffinError, match="lambda setting 'catalog_function'.*no-such-catalog"):
            CatalogPlanner(inv)(table, None)
    finally:
        inv.close()


def test_plan_iceberg_needs_a_catalog_function():
    from puffin.errors import PuffinError

    with pytest.raises(PuffinError, match="'catalog_function'.*plan_iceberg='lambda'"):
        LambdaSettings.resolve({"plan_iceberg": "lambda"}, env={})
    with pytest.raises(PuffinError, match="'plan_iceberg'"):
        LambdaSettings.resolve({"plan_iceberg": "remote"}, env={})
    s = LambdaSettings.resolve({}, env={"PUFFIN_LAMBDA_PLAN_ICEBERG": "Lambda",
                                        "PUFFIN_LAMBDA_CATALOG_FUNCTION": "puffin-catalog"})
    assert s.plan_iceberg == "lambda" and s.catalog_function == "puffin-catalog"


def _session_hook() -> bool:
    from puffin.iceberg import IcebergTable

    return "planner" in {f.name for f in dataclasses.fields(IcebergTable)}


@pytest.mark.skipif(not _session_hook(), reason="the session does not install the Catalog planner yet: needs "
                    "IcebergTable.planner / Catalogs.planner and the Connection hook (issue 9, the lead's diff)")
def test_the_driver_plans_iceberg_on_the_catalog_function(lake, s3_server, local_lambda):
    settings = {"endpoint_url": local_lambda.endpoint, "catalog_function": "puffin-catalog", "plan_iceberg": "lambda",
                "function_timeout": FUNCTION_TIMEOUT_S}
    here = puffin.connect(catalogs=lake, s3=s3_options(s3_server), prestart=False)
    remote = puffin.connect(catalogs=lake, s3=s3_options(s3_server), prestart=False, lambda_=settings)
    assert remote.sql(SQL).fetchall() == here.sql(SQL).fetchall()  # a one-task plan, run here
    assert "planned on Lambda puffin-catalog (warm" in remote.sql("EXPLAIN " + SQL).render()
    # a distributed plan pushes the filter into the scan: the function prunes with it
    split = puffin.connect(target_partitions=2, catalogs=lake, s3=s3_options(s3_server), prestart=False,
                           lambda_=settings)
    text = split.sql("EXPLAIN " + SQL).render()
    assert "2 of 3 files, 1 pruned" in text and "planned on Lambda puffin-catalog (warm" in text, text
    assert "Offload" not in text  # offload stays "never": only the planning moved
    assert "planned on" not in here.sql("EXPLAIN " + SQL).render()
