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
# The tests choose their Ray (fixtures below): connections do not start one in the background.
# tests/test_launch.py covers the background start, each case in a fresh interpreter.
os.environ.setdefault("PUFFIN_PRESTART", "0")
# Every query is logged (puffin.querylog): the tests' go to a log of their own, not ~/.puffin.
if "PUFFIN_HOME" not in os.environ:
    import tempfile

    os.environ["PUFFIN_HOME"] = tempfile.mkdtemp(prefix="puffin-home-")

import puffin.tpch
from puffin import launch
from puffin.demo import TABLES, generate_tpch


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
    return puffin.tpch.query(n)  # shipped with the package: the tests need nothing beside the clone


class RayBackends:
    """Ray is process-global: one backend at a time, switched only when a test needs another."""

    def __init__(self) -> None:
        self.current: str | None = None
        self.cluster = None
        self.generation = 0  # bumped on every (re)start: connections of an earlier Ray are stale

    def use(self, name: str, env: dict[str, str] | None = None) -> None:
        if self.current == name and env is None:
            return
        self.stop()
        self.generation += 1
        opts = {"log_to_driver": False}
        if name == "cluster":
            from ray.cluster_utils import Cluster

            self.cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
            for _ in range(2):
                self.cluster.add_node(num_cpus=1)
            self.cluster.wait_for_nodes()
            ray.init(address=self.cluster.address, **opts)
        else:
            runtime_env = {"env_vars": env} if env else None
            ray.init(address="local", num_cpus=2, include_dashboard=False, runtime_env=runtime_env, **opts)
        self.current = name if env is None else f"{name}+env"

    def stop(self) -> None:
        if ray.is_initialized():
            ray.shutdown()
        launch.stop_head()  # a local head a connection started on its own (no fixture) goes too
        if self.cluster is not None:
            self.cluster.shutdown()
            self.cluster = None
        self.current = None


@pytest.fixture(scope="session")
def ray_backends():
    backends = RayBackends()
    yield backends
    backends.stop()


@pytest.fixture(scope="module")
def local_ray(ray_backends):
    """A local Ray (the embedded default: what puffin.connect() starts)."""
    ray_backends.use("local")
    return "local"


@pytest.fixture(scope="module", params=["local", "cluster"])
def backend(request, ray_backends):
    """Local Ray, then three Ray nodes on this machine (ray.cluster_utils.Cluster)."""
    ray_backends.use(request.param)
    return request.param


@pytest.fixture
def ray_with_fault(tmp_path, ray_backends):
    """A local Ray whose worker running stage 1's first task kills itself once (SIGKILL, mid-task:
    runtime.KILL_ONCE_ENV); yields the marker file that says it happened."""
    from puffin import runtime

    marker = tmp_path / "killed-once"
    ray_backends.use("local", env={runtime.KILL_ONCE_ENV: f"{marker}:1"})
    yield marker
    ray_backends.stop()


# a real S3-compatible server (SeaweedFS) for the object-store and Iceberg tests
from tests.s3_server import s3_bucket, s3_env, s3_server, s3_tpch  # noqa: F401
