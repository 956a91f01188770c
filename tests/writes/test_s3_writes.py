"""COPY ... TO s3:// on the S3 test server (SeaweedFS): partitioned output round-trips, a failure
midway leaves no visible object, credentials that cannot write are refused before any task runs."""

from __future__ import annotations

import pytest

import puffin
from puffin.demo import TABLES
from puffin.errors import ExecutionError, PuffinError
from puffin.testing import assert_same_result

Q = "SELECT o_orderkey, o_orderstatus, o_totalprice, o_orderdate, o_comment FROM orders"


def _creds(server, **override):
    return {"endpoint_url": server.endpoint, "access_key_id": server.access_key,
            "secret_access_key": server.secret_key, "region": server.region, **override}


def _keys(server, bucket, prefix):
    pages = server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    # (pyarrow leaves empty "directory" marker objects, keys ending in "/", which no reader lists)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []) if not o["Key"].endswith("/"))


@pytest.fixture(scope="module", params=[None, 3], ids=lambda p: f"p{p}")
def con(request, local_ray, s3_server, tpch_dir):
    c = puffin.connect(target_partitions=request.param, s3=_creds(s3_server))
    for t in TABLES:
        c.register(t, f"{tpch_dir}/{t}")
    return c


def test_partitioned_copy_round_trips(con, oracle, s3_server, s3_bucket, request):
    prefix = f"writes/{request.node.callspec.id}/by_status"
    res = con.sql(f"COPY ({Q}) TO 's3://{s3_bucket}/{prefix}/' (FORMAT parquet, PARTITION_BY (o_orderstatus))")
    assert res.arrow().column("rows_written").to_pylist() == [oracle.sql(Q).to_arrow_table().num_rows]
    keys = _keys(s3_server, s3_bucket, prefix + "/")
    assert f"{prefix}/_SUCCESS" in keys
    assert {k.split("/")[3] for k in keys if not k.endswith("_SUCCESS")} == {"o_orderstatus=F", "o_orderstatus=O", "o_orderstatus=P"}
    assert not [k for k in keys if "_puffin_staging" in k]
    cols = "o_orderkey, o_totalprice, o_orderdate, o_comment, o_orderstatus"
    back = con.sql(f"SELECT {cols} FROM 's3://{s3_bucket}/{prefix}' ORDER BY o_orderkey").arrow()
    want = oracle.sql(f"SELECT {cols} FROM orders ORDER BY o_orderkey").to_arrow_table()
    assert back.drop_columns(["o_orderstatus"]).equals(want.drop_columns(["o_orderstatus"]))
    assert back.column("o_orderstatus").to_pylist() == want.column("o_orderstatus").to_pylist()


def test_one_object_and_overwrite(con, oracle, s3_server, s3_bucket, request):
    key = f"writes/{request.node.callspec.id}/single/one.csv"
    con.sql(f"COPY (SELECT * FROM nation ORDER BY n_nationkey) TO 's3://{s3_bucket}/{key}' (HEADER)")
    assert _keys(s3_server, s3_bucket, key.rsplit("/", 1)[0] + "/") == [key]
    got = con.sql(f"SELECT * FROM 's3://{s3_bucket}/{key}' ORDER BY n_nationkey").arrow()
    assert_same_result(got, oracle.sql("SELECT * FROM nation ORDER BY n_nationkey").to_arrow_table(),
                       ordered=True, check_types=False)
    d = f"writes/{request.node.callspec.id}/dir"
    con.sql(f"COPY (SELECT 1 AS k) TO 's3://{s3_bucket}/{d}/' (FORMAT parquet)")
    with pytest.raises(PuffinError, match="not empty; add OVERWRITE"):
        con.sql(f"COPY (SELECT 2 AS k) TO 's3://{s3_bucket}/{d}/' (FORMAT parquet)")
    con.sql(f"COPY (SELECT 2 AS k) TO 's3://{s3_bucket}/{d}/' (FORMAT parquet, OVERWRITE)")
    assert con.sql(f"SELECT k FROM 's3://{s3_bucket}/{d}'").fetchall() == [(2,)]


def test_a_failure_midway_leaves_no_visible_object(con, s3_server, s3_bucket, request):
    prefix = f"writes/{request.node.callspec.id}/failed"
    bad = ("SELECT o_orderkey, CASE WHEN o_orderkey = (SELECT max(o_orderkey) FROM orders) "
           "THEN error('boom') ELSE o_comment END AS c FROM orders")
    with pytest.raises(ExecutionError, match="boom"):
        con.sql(f"COPY ({bad}) TO 's3://{s3_bucket}/{prefix}/' (FORMAT parquet, PARTITION_BY (o_orderkey))")
    assert _keys(s3_server, s3_bucket, prefix) == []


def test_credentials_that_cannot_write_are_refused_first(local_ray, s3_server, s3_bucket):
    bad = puffin.connect(s3=_creds(s3_server, secret_access_key="wrong-secret"))
    with pytest.raises(PuffinError, match="denied") as err:
        bad.sql(f"COPY (SELECT 1 AS k) TO 's3://{s3_bucket}/writes/denied/' (FORMAT parquet)")
    assert "wrong-secret" not in str(err.value)
    assert _keys(s3_server, s3_bucket, "writes/denied") == []


def test_an_iceberg_table_the_credentials_cannot_write(local_ray, tmp_path, s3_server, s3_bucket):
    pytest.importorskip("pyiceberg")
    props = {"type": "sql", "uri": f"sqlite:///{tmp_path}/c.db", "warehouse": f"s3://{s3_bucket}/denied-lake",
             "s3.endpoint": s3_server.endpoint, "s3.access-key-id": s3_server.access_key,
             "s3.secret-access-key": s3_server.secret_key, "s3.region": s3_server.region}
    good = puffin.connect(catalogs={"lake": props})
    from pyiceberg.catalog.sql import SqlCatalog

    cat = SqlCatalog("lake", **{k: v for k, v in props.items() if k != "type"})
    cat.create_namespace("db")
    good.sql("CREATE TABLE lake.db.t AS SELECT 1::BIGINT AS x")
    before = _keys(s3_server, s3_bucket, "denied-lake/")
    bad = puffin.connect(catalogs={"lake": dict(props, **{"s3.secret-access-key": "wrong-secret"})})
    with pytest.raises(PuffinError) as err:
        bad.sql("INSERT INTO lake.db.t SELECT 2")
    assert "access denied" in str(err.value)
    assert "wrong-secret" not in str(err.value)
    assert _keys(s3_server, s3_bucket, "denied-lake/") == before
    assert good.sql("SELECT x FROM lake.db.t").fetchall() == [(1,)]


def test_a_killed_writers_staging_is_removed_by_the_next_write(con, s3_server, s3_bucket, request):
    """What a driver killed before publishing leaves under the prefix (hidden objects and its
    owner record, a dead pid of this host) goes with the next write there; a live writer's stays."""
    import json
    import os
    import socket
    import subprocess
    import sys

    from puffin.writes import files

    prefix = f"writes/{request.node.callspec.id}/abandoned"
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    client = s3_server.client()
    owners = {"dead": {"host": socket.gethostname(), "pid": dead, "started": "1"},
              "live": {"host": socket.gethostname(), "pid": os.getpid(), "started": files._start_time(os.getpid())}}
    for name, owner in owners.items():
        client.put_object(Bucket=s3_bucket, Key=f"{prefix}/_puffin_staging-{name}/{files.OWNER}",
                          Body=json.dumps(owner).encode())
        client.put_object(Bucket=s3_bucket, Key=f"{prefix}/_puffin_staging-{name}/k=1/part-0.parquet", Body=b"x")
    con.sql(f"COPY (SELECT 1 AS k, 2 AS v) TO 's3://{s3_bucket}/{prefix}/' (FORMAT parquet, PARTITION_BY (k))")
    keys = _keys(s3_server, s3_bucket, prefix + "/")
    assert not [k for k in keys if "staging-dead" in k]
    assert [k for k in keys if "_puffin_staging" in k] == [f"{prefix}/_puffin_staging-live/{files.OWNER}",
                                                           f"{prefix}/_puffin_staging-live/k=1/part-0.parquet"]
    assert con.sql(f"SELECT k, v FROM 's3://{s3_bucket}/{prefix}'").fetchall() == [(1, 2)]
