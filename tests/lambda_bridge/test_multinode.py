"""Offload on a Ray cluster of two nodes (``ray.cluster_utils.Cluster`` on this machine): the
scan fragments run on the local Lambda service, their outputs enter the object store from the
driver (on the head node), and the join and aggregate stages reading them run as Ray tasks on
both nodes; the answer is DuckDB's."""

from __future__ import annotations

import contextlib
import time

import duckdb
import psutil
import pyarrow as pa
import pytest
import ray

import puffin
from puffin.testing import assert_same_result
from tests.lambda_bridge.conftest import FUNCTION_TIMEOUT_S, events_table, s3_options

# a self-join by hash (no broadcast): two offloaded scan stages, then shuffles, a join and an
# aggregate on Ray
SQL = ("SELECT a.grp, count(*) AS n, sum(b.v) AS s, max(a.id) AS m FROM events a JOIN events b ON a.id = b.id "
       "WHERE b.v > 10 AND a.id % 3 <> 0 GROUP BY a.grp ORDER BY a.grp")


@pytest.fixture(scope="module")
def two_nodes(ray_backends):
    """A head and one more node, one CPU each, joined by this driver (the tests' Ray backends
    switch back to their own Ray for the next module)."""
    from ray.cluster_utils import Cluster

    ray_backends.stop()
    ray_backends.generation += 1
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    ray_backends.cluster, ray_backends.current = cluster, "cluster-2-nodes"
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    # a worker process on each node with DuckDB and the fragment code imported: Ray reuses a
    # leased worker for the next queued task, so a node whose first worker is still starting
    # (seconds on a busy machine) would see every task done by the other node's by then
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    warm = ray.remote(num_cpus=1)(_import_fragment_code)
    ray.get([warm.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
             for n in ray.nodes()])
    yield cluster
    ray_backends.stop()


def _import_fragment_code() -> int:
    import puffin.operators.fragment  # noqa: F401 - DuckDB, pyarrow and the fragment runner

    return 0


def _node_index(cluster, node_id: str) -> int:
    """0 for the head, 1 for the added node."""
    return 0 if node_id == cluster.head_node.node_id else 1


@contextlib.contextmanager
def _holding_cpu(node_id: str):
    """An actor holds ``node_id``'s one CPU, so no task can start there until it ends."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    holder = _Holder.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote()
    ray.get(holder.ready.remote())
    try:
        yield
    finally:
        ray.kill(holder)
        deadline = time.monotonic() + 30
        while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)


@ray.remote(num_cpus=1)
class _Holder:
    def ready(self) -> bool:
        return True


def _node_of(cluster):
    """pid -> the node (its raylet's pid) whose raylet started that worker process."""
    raylets = {node.all_processes["raylet"][0].process.pid: i
               for i, node in enumerate([cluster.head_node, *cluster.worker_nodes])}

    def node(pid: int) -> int | None:
        try:
            for p in psutil.Process(pid).parents():
                if p.pid in raylets:
                    return raylets[p.pid]
        except psutil.NoSuchProcess:
            pass
        return None

    return node


def test_offloaded_fragments_feed_stages_on_both_nodes(two_nodes, s3_server, s3_bucket, local_lambda, events):
    assert len(ray.nodes()) == 2
    con = puffin.connect(target_partitions=4, s3=s3_options(s3_server),
                         config={"broadcast_bytes": 0, "replicate_bytes": 0},
                         lambda_={"endpoint_url": local_lambda.endpoint, "function_timeout": FUNCTION_TIMEOUT_S,
                                  "results_url": f"s3://{s3_bucket}/multinode-results", "max_concurrency": 4,
                                  "offload": "always"})
    con.register("events", events)
    oracle = duckdb.connect()
    oracle.register("events", pa.concat_tables([events_table(0), events_table(1)]))
    expected = oracle.sql(SQL).to_arrow_table()
    assert_same_result(con.sql(SQL).arrow(), expected, ordered=True, label="2 nodes")

    text = con.sql("EXPLAIN ANALYZE " + SQL).render()
    assert "fallback to Ray" not in text, text

    # the same plan through the runtime, to see where each Ray task ran
    from puffin import runtime

    node = _node_of(two_nodes)
    ids = {_node_index(two_nodes, n["NodeID"]): n["NodeID"] for n in ray.nodes()}
    seen: set = set()
    # Ray would place the readers near their inputs (put on the head), so each run holds one
    # node's CPU: the readers must run on the other node, fetching what the driver put there
    for busy in (0, 1):
        with _holding_cpu(ids[busy]):
            planned = con._plan(SQL, "duckdb", runtime.cluster_cpus(), runtime.memory_per_cpu(), runtime.node_count())
            offload = con._offload(planned, None)
            offloaded = {s for s, d in offload.decisions.items() if d.tasks}
            assert offloaded and all(len(d.tasks) == d.total for d in offload.decisions.values() if d.tasks)
            result, metrics = con._runtime().run(planned.plan.stages, planned.fragments, analyze=True,
                                                 offload=offload)
        assert_same_result(result.rename_columns(planned.plan.names), expected, ordered=True, label=f"{busy} busy")
        assert len(offload.ran) == sum(d.total for d in offload.decisions.values() if d.tasks) and not offload.fallbacks
        readers = {st.id for st in planned.plan.stages if any(x.stage_id in offloaded for x in st.inputs)}
        assert readers  # stages whose inputs are Lambda's outputs
        ran_on = {node(m.pid) for m in metrics if m.stage_id in readers}
        assert ran_on == {1 - busy}, f"with node {busy} busy, the readers ran on nodes {ran_on}"
        seen |= ran_on
    assert seen == {0, 1}
    con.close()
