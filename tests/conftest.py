"""Shared fixtures: TPC-H data made with tpchgen-cli, DuckDB as the oracle, Ray backends.

Ray is process-global, so backends are session-scoped parametrized fixtures: pytest groups
the tests by backend and each cluster is started once and shut down before the next.
"""

from __future__ import annotations

import os
import sys

import duckdb
import pytest
import ray

sys.path.insert(0, os.path.dirname(__file__))

from puffin.demo import TABLES, generate_tpch  # noqa: E402

SHARED = os.environ.get(
    "PUFFIN_SHARED", os.path.join(os.path.dirname(__file__), "..", "..", "shared")
)
TPCH_QUERIES = os.path.join(SHARED, "tpch", "queries")


@pytest.fixture(scope="session")
def tpch_dir(tmp_path_factory) -> str:
    """TPC-H SF0.01: lineitem and orders in 3 files with small row groups, so scans split."""
    d = str(tmp_path_factory.getbasetemp() / "tpch-sf0.01")
    return generate_tpch(d, 0.01, parts=3, row_group_bytes="256KB")


@pytest.fixture(scope="session")
def oracle(tpch_dir) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for t in TABLES:
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{tpch_dir}/{t}/*.parquet')")
    return con


def tpch_query(n: int) -> str:
    with open(os.path.join(TPCH_QUERIES, f"q{n:02d}.sql")) as f:
        return f.read()


def _stop_ray() -> None:
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray (the embedded default: what puffin.connect() starts)."""
    _stop_ray()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield "local"
    _stop_ray()


@pytest.fixture(scope="session")
def cluster_ray():
    """Three Ray nodes on this machine (ray.cluster_utils.Cluster), so exchanges cross nodes."""
    from ray.cluster_utils import Cluster

    _stop_ray()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield "cluster"
    _stop_ray()
    cluster.shutdown()


@pytest.fixture(scope="session", params=["local", "cluster"])
def backend(request):
    return request.getfixturevalue(f"{request.param}_ray")
