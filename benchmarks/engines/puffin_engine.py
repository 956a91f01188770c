"""Puffin itself, through its public API (``puffin.connect`` / ``register`` / ``sql``).

``plan_cache=False`` (the cold runs and the planning table) plans every query anew.

With ``nodes`` set (the scaling run) the worker first starts a ``ray.cluster_utils.Cluster``
of that many nodes sharing ``cpus`` logical CPUs, and connects Puffin to it.
"""

from __future__ import annotations


class Engine:
    def __init__(
        self,
        nodes: int | None = None,
        cpus: int | None = None,
        target_partitions: int | None = None,
        plan_cache: bool = True,
    ) -> None:
        import puffin

        self.puffin = puffin
        self.cluster = None
        # only non-default options are passed: the harness works with a puffin.connect that
        # predates them as long as they are not asked for
        extra = {} if plan_cache else {"plan_cache": False}
        if nodes:
            self.cluster = _start_cluster(nodes, cpus or nodes)
            self.con = puffin.connect(address=self.cluster.address, target_partitions=target_partitions, **extra)
        else:
            self.con = puffin.connect(target_partitions=target_partitions, **extra)

    def version(self) -> str:
        return getattr(self.puffin, "__version__", "dev")

    def load(self, tables: dict[str, str]) -> None:
        for name, path in tables.items():
            self.con.register(name, path)

    def register_arrow(self, name: str, table) -> None:
        self.con.register(name, table)

    def run(self, sql: str):
        return self.con.sql(sql).arrow()

    def plan(self, sql: str) -> str:
        """The text of plain EXPLAIN (planning only; it ends with a ``planning: X ms`` line)."""
        return "\n".join(str(v) for v in self.con.sql("EXPLAIN " + sql).arrow().column(0).to_pylist())

    def explain_analyze(self, sql: str) -> str:
        """The text of EXPLAIN ANALYZE: its ``explain`` column, else the result as text."""
        result = self.con.sql("EXPLAIN ANALYZE " + sql)
        table = result.arrow()
        if "explain" in table.column_names:
            return "\n".join(str(v) for v in table.column("explain").to_pylist())
        return str(result)

    def close(self) -> None:
        self.con.close()
        if self.cluster is not None:
            self.cluster.shutdown()


def _start_cluster(nodes: int, cpus: int):
    """``nodes`` Ray nodes on this machine, splitting ``cpus`` logical CPUs and 30% of the
    RAM (one node's default object store) between them."""
    import psutil
    from ray.cluster_utils import Cluster

    per_node = [cpus // nodes + (1 if i < cpus % nodes else 0) for i in range(nodes)]
    store = int(0.3 * psutil.virtual_memory().total / nodes)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": per_node[0], "object_store_memory": store})
    for n in per_node[1:]:
        cluster.add_node(num_cpus=n, object_store_memory=store)
    cluster.wait_for_nodes()
    return cluster
