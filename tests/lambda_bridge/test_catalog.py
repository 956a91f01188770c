"""The Catalog function plans Iceberg scans; the Engine function reads Iceberg fragments."""

from __future__ import annotations

import pyarrow as pa
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
