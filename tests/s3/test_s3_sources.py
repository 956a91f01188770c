"""s3:// sources against a real S3-compatible server (SeaweedFS, which checks signatures)."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

import puffin
from puffin.demo import TABLES
from puffin.storage import S3Config
from puffin.testing import assert_same_result, has_order_by
from tests.conftest import tpch_query


def _creds(server, **override):
    opts = {"endpoint_url": server.endpoint, "access_key_id": server.access_key,
            "secret_access_key": server.secret_key, "region": server.region}
    opts.update(override)
    return opts


@pytest.fixture(scope="module")
def con(local_ray, s3_server, s3_tpch):
    c = puffin.connect(target_partitions=2, s3=_creds(s3_server),
                       config={"broadcast_bytes": 0, "replicate_bytes": 0})
    for t in TABLES:
        c.register(t, f"{s3_tpch}/{t}")
    return c


@pytest.mark.parametrize("q", range(1, 23), ids=lambda q: f"q{q:02d}")
def test_tpch_from_s3_matches_duckdb(con, oracle, q):
    sql = tpch_query(q)
    assert_same_result(con.sql(sql).arrow(), oracle.sql(sql).to_arrow_table(),
                       ordered=has_order_by(sql), label=f"q{q} from s3")


def test_direct_references_and_readers(con, s3_tpch):
    assert con.sql(f"SELECT count(*) AS n FROM '{s3_tpch}/nation/*.parquet'").fetchall() == [(25,)]
    rows = con.sql(f"SELECT r_name FROM read_parquet('{s3_tpch}/region/*.parquet') ORDER BY 1").fetchall()
    assert [r[0] for r in rows] == ["AFRICA", "AMERICA", "ASIA", "EUROPE", "MIDDLE EAST"]


def test_csv_and_hive_layout_on_s3(con, s3_server, s3_bucket):
    client = s3_server.client()
    buf = io.BytesIO()
    pcsv.write_csv(pa.table({"k": [1, 2, 3], "v": ["a", "b", "c"]}), buf)
    client.put_object(Bucket=s3_bucket, Key="misc/t.csv", Body=buf.getvalue())
    for year, vals in ((2023, [1, 2]), (2024, [3])):
        out = io.BytesIO()
        pq.write_table(pa.table({"x": vals}), out)
        client.put_object(Bucket=s3_bucket, Key=f"misc/hive/year={year}/part.parquet", Body=out.getvalue())
    assert con.sql(f"SELECT sum(k) AS s FROM 's3://{s3_bucket}/misc/t.csv'").fetchall() == [(6,)]
    con.register("hive_s3", f"s3://{s3_bucket}/misc/hive")
    assert con.sql("SELECT year, sum(x) AS s FROM hive_s3 GROUP BY 1 ORDER BY 1").fetchall() == [(2023, 3), (2024, 3)]


def test_credentials_come_from_the_aws_environment(local_ray, s3_env, s3_tpch):
    c = puffin.connect()  # nothing passed: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ... are used
    c.register("nation", f"{s3_tpch}/nation")
    assert c.sql("SELECT count(*) AS n FROM nation").fetchall() == [(25,)]


def test_wrong_key_is_a_clear_error_that_hides_the_secret(local_ray, s3_server, s3_tpch):
    wrong = "not-the-secret-" + "x" * 20
    c = puffin.connect(s3=_creds(s3_server, secret_access_key=wrong))
    with pytest.raises(puffin.PuffinError) as info:
        c.register("nation", f"{s3_tpch}/nation")
    message = str(info.value)
    assert "denied" in message and f"{s3_tpch}/nation" in message
    assert wrong not in message and s3_server.access_key not in message


def test_missing_objects_and_buckets(con, s3_tpch):
    with pytest.raises(puffin.BindError, match="no files found"):
        con.register("nope", f"{s3_tpch}/no_such_table")
    with pytest.raises(puffin.PuffinError, match="no-such-bucket"):
        con.sql("SELECT * FROM 's3://no-such-bucket/x/*.parquet'")


def test_secrets_never_print(con, s3_server, s3_tpch):
    cfg = S3Config.resolve(_creds(s3_server))
    assert s3_server.secret_key not in repr(cfg) and s3_server.secret_key not in cfg.describe()
    plan = con.sql(f"EXPLAIN SELECT count(*) FROM '{s3_tpch}/nation/*.parquet'").render()
    assert s3_server.secret_key not in plan and s3_server.access_key not in plan
