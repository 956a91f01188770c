"""Puffin as jobs on a Ray cluster made by Ray's cluster launcher.

cluster/local.yaml is brought up with `ray up` over real SSH to this machine (tests/cluster_ssh.py:
sshd of the test's own, in a PID namespace of its own, with this checkout's Python environment),
then the job scripts in cluster/jobs run on it the two ways Ray offers: `ray submit` (the script
copied to the head over rsync and run there in a login shell) and `ray job submit` (Ray's Jobs
API on the head's dashboard, with token authentication). Written results are checked against
DuckDB; a bad statement must fail the job with Puffin's message. `ray down` must leave no Ray
process behind. Nothing is installed or downloaded while the test runs.

cluster/aws.yaml cannot be brought up here; it is checked offline by Ray's own config
preparation and validation, its EC2 node configs by botocore's RunInstances model, and the IAM
template it names by cfn-lint.

About 65 s on two cores (ray up ~6-15 s, each `ray submit` ~5-10 s, each `ray job submit` ~10-25 s,
ray down ~6 s). Skipped, with the reason, where sshd, rsync or nc are missing (CI installs them:
scripts/install_cluster_test_deps.sh) or without root (sshd for the current user in a PID
namespace).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import signal
import time
import urllib.error
import urllib.request

import cluster_ssh
import psutil
import pyarrow.parquet as pq
import pytest
import yaml

from puffin.testing import assert_same_result

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCAL_YAML = os.path.join(REPO, "cluster", "local.yaml")
AWS_YAML = os.path.join(REPO, "cluster", "aws.yaml")
AWS_IAM = os.path.join(REPO, "cluster", "aws-iam.yaml")
JOBS = os.path.join(REPO, "cluster", "jobs")
QUERY_PY = os.path.join(JOBS, "query.py")
TPCH_QUERIES = (1, 3, 5, 6, 10, 12, 13, 18)  # aggregates, 2- to 6-way joins, an outer join, IN

WHY_NOT = cluster_ssh.unavailable()
needs_ssh_host = pytest.mark.skipif(WHY_NOT is not None, reason=f"no SSH host for `ray up`: {WHY_NOT}")


def _dashboard_missing() -> str | None:
    import ray._private.utils

    return ray._private.utils.get_dashboard_dependency_error()


DASHBOARD_MISSING = _dashboard_missing()
needs_jobs_api = pytest.mark.skipif(
    DASHBOARD_MISSING is not None,
    reason=f"Ray's Jobs API runs in the dashboard, which is not installed ({DASHBOARD_MISSING}): "
           "pip install 'ray[default]'")


class Cluster:
    def __init__(self, host: cluster_ssh.SshHost, launcher: cluster_ssh.Launcher, ports: dict[str, int], root: str,
                 data: str):
        self.host, self.launcher, self.ports, self.root, self.data = host, launcher, ports, root, data

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.ports['dashboard']}"

    def job_env(self) -> dict[str, str]:
        """A Jobs API client's environment: the head's token (made by the config's setup)."""
        env = dict(self.launcher.env)
        env["RAY_AUTH_MODE"] = "token"
        env["RAY_AUTH_TOKEN_PATH"] = os.path.join(self.host.home, ".ray", "auth_token")
        return env

    def job_submit(self, *entrypoint: str, timeout: float = 180) -> cluster_ssh.Completed:
        return self.launcher.ray("job", "submit", "--address", self.dashboard, "--working-dir", JOBS,
                                 "--log-style=record", "--log-color=false", "--", *entrypoint,
                                 timeout=timeout, env=self.job_env())


def render_config(host: cluster_ssh.SshHost, root: str, ports: dict[str, int]) -> tuple[str, str]:
    """cluster/local.yaml for this test's SSH host: its user, key and port (through the proxy
    command), and free ports and a temp dir of its own for the head, so that it runs beside
    any other Ray on this machine."""
    with open(LOCAL_YAML) as f:
        config = yaml.safe_load(f)
    name = f"puffin-test-{os.getpid()}-{secrets.token_hex(3)}"
    config["cluster_name"] = name
    config["provider"]["head_ip"] = "127.0.0.1"
    config["auth"] = {"ssh_user": host.user, "ssh_private_key": host.client_key,
                      "ssh_proxy_command": host.proxy_command}
    extra = (f" --port={ports['gcs']} --dashboard-port={ports['dashboard']}"
             f" --dashboard-agent-listen-port={ports['agent']} --metrics-export-port={ports['metrics']}"
             f" --temp-dir={os.path.join(root, 'ray')}")
    starts = [i for i, c in enumerate(config["head_start_ray_commands"]) if "ray start --head" in c]
    assert len(starts) == 1, "cluster/local.yaml: one `ray start --head` command expected"
    config["head_start_ray_commands"][starts[0]] += extra  # a repeated option: click keeps the last
    path = os.path.join(root, "cluster.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    return path, name


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_ADDRESS", "RAY_AUTH", "PUFFIN_TEST"))}
    env["PATH"] = cluster_ssh.VENV_BIN + os.pathsep + env.get("PATH", "")
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    for key in ("NO_PROXY", "no_proxy"):  # the head is on this machine: never through a proxy
        env[key] = ",".join(filter(None, [env.get(key), "127.0.0.1", "localhost"]))
    return env


def wait_for_dashboard(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(f"{url}/api/version", timeout=5):
                return
        except urllib.error.HTTPError:
            return  # it answers (401/403 without a token): up
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.fixture(scope="module")
def cluster(tpch_dir):
    root = cluster_ssh.make_root()
    host = cluster_ssh.SshHost(root)
    launcher = None
    try:
        host.start()
        ports = {k: cluster_ssh.free_port() for k in ("gcs", "dashboard", "agent", "metrics")}
        config, name = render_config(host, root, ports)
        launcher = cluster_ssh.Launcher(config, name, cli_env())
        up = launcher.up()
        assert up.returncode == 0, up.describe()
        c = Cluster(host, launcher, ports, root, tpch_dir)
        if DASHBOARD_MISSING is None:
            wait_for_dashboard(c.dashboard)
        yield c
    finally:
        _cleanup(host, launcher, root)


def _cleanup(host: cluster_ssh.SshHost, launcher: cluster_ssh.Launcher | None, root: str) -> None:
    """Whatever happened: `ray down` if the test did not, the SSH host and everything in its
    namespace killed, this cluster's SSH clients and the local provider's files removed."""
    if launcher is not None and launcher.up_done and not launcher.down_done:
        launcher.down(timeout=90)
    host.stop()
    if launcher is not None:
        marks = [root] + ([f"nc 127.0.0.1 {host.port}"] if host.port else [])
        for p in launcher.leftover_clients(marks):
            with contextlib.suppress(psutil.Error):  # gone already
                p.send_signal(signal.SIGKILL)
        for path in launcher.local_files():
            os.unlink(path)
        control = launcher.ssh_control_dir()
        shutil.rmtree(control, ignore_errors=True)
        with contextlib.suppress(OSError):  # Ray's per-user folder, when no other cluster uses it
            os.rmdir(os.path.dirname(control))
    shutil.rmtree(root, ignore_errors=True)


# -- the jobs ----------------------------------------------------------------------------------
FLAGS_SQL = ("SELECT l_returnflag, l_linestatus, count(*) AS n, sum(l_quantity) AS qty "
             "FROM lineitem WHERE l_shipdate <= DATE '1998-09-02' GROUP BY ALL ORDER BY ALL")


@needs_ssh_host
def test_ray_submit_runs_sql_on_the_cluster_and_writes_the_result(cluster, oracle):
    out = os.path.join(cluster.root, "results", "flags.parquet")
    # `ray submit` joins the arguments into one remote shell command: the SQL is quoted for it
    r = cluster.launcher.submit(QUERY_PY, shlex.quote(FLAGS_SQL), "--tpch", cluster.data, "--out", out)
    assert r.returncode == 0, r.describe()
    # the job joined this cluster (its GCS port), not another Ray on the machine
    assert f":{cluster.ports['gcs']}: 1 node(s)" in r.output, r.describe()
    expected = oracle.sql(FLAGS_SQL).to_arrow_table()
    assert "l_returnflag" in r.output and f"[query] {expected.num_rows} row(s)" in r.output, r.describe()
    for n in expected.column("n").to_pylist():
        assert str(n) in r.output, r.describe()  # printed as DuckDB's table
    assert_same_result(pq.read_table(out), expected, ordered=True, label="ray submit query.py",
                       lenient_strings=True, sql=FLAGS_SQL)


@needs_ssh_host
def test_ray_submit_bad_sql_fails_with_puffins_message(cluster):
    r = cluster.launcher.submit(QUERY_PY, shlex.quote("SELECT l_nosuchcolumn FROM lineitem"),
                                "--tables", cluster.data)
    assert r.returncode != 0, r.describe()
    assert 'Error: Column "l_nosuchcolumn" not found' in r.output, r.describe()
    assert "l_returnflag" in r.output, r.describe()  # Puffin's list of the valid columns


@needs_ssh_host
@needs_jobs_api
def test_ray_job_submit_runs_tpch_and_writes_results(cluster, oracle):
    import puffin.tpch

    out = os.path.join(cluster.root, "tpch-results")
    queries = ",".join(str(n) for n in TPCH_QUERIES)
    r = cluster.job_submit("python", "tpch.py", "--data", cluster.data, "--queries", queries, "--out", out, "--check")
    assert r.returncode == 0, r.describe()
    assert "succeeded" in r.output, r.describe()
    assert f":{cluster.ports['gcs']}: 1 node(s)" in r.output, r.describe()  # RAY_ADDRESS, set by the Jobs API
    assert f"[tpch] {len(TPCH_QUERIES)} of {len(TPCH_QUERIES)} queries ran" in r.output, r.describe()
    for n in TPCH_QUERIES:
        sql = puffin.tpch.query(n)
        assert f"[tpch] q{n:02d} matches DuckDB" in r.output, r.describe()  # the job's own check, in its log
        expected = oracle.sql(sql).to_arrow_table()
        got = pq.read_table(os.path.join(out, f"q{n:02d}.parquet"))
        assert_same_result(got, expected, ordered=True, label=f"ray job submit tpch.py q{n:02d}",
                           lenient_strings=True, sql=sql)


@needs_ssh_host
@needs_jobs_api
def test_ray_job_submit_bad_sql_fails_with_puffins_message(cluster):
    r = cluster.job_submit("python", "query.py", "--tpch", cluster.data, "SELECT count(*) FROM lineitems")
    assert r.returncode != 0, r.describe()
    assert "failed" in r.output, r.describe()
    assert "Error: Table 'lineitems' does not exist" in r.output, r.describe()


@needs_ssh_host
@needs_jobs_api
def test_puffin_cli_as_a_job(cluster):
    """`ray job submit -- python -m puffin sql ...`: the CLI joins the job's cluster (RAY_ADDRESS)."""
    sql = "SELECT count(*) AS orders FROM orders"
    r = cluster.job_submit("python", "-m", "puffin", "sql", "--format", "csv",
                           "-r", f"orders={cluster.data}/orders", sql)
    assert r.returncode == 0, r.describe()
    assert "orders\n15000\n" in r.output.replace("\r", ""), r.describe()


@needs_ssh_host
def test_ray_down_leaves_no_ray_process(cluster):
    """Runs last in this module: `ray down` itself ends the head's Ray processes; then nothing
    of the cluster is left on this machine."""
    r = cluster.launcher.down()
    assert r.returncode == 0, r.describe()
    deadline = time.monotonic() + 15
    while cluster.host.ray_processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert cluster.host.ray_processes() == [], "`ray down` left Ray processes on the head"
    cluster.host.stop()
    marks = [cluster.root, f"nc 127.0.0.1 {cluster.host.port}"]
    deadline = time.monotonic() + 10
    while cluster.launcher.leftover_clients(marks) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [" ".join(p.cmdline())[:200] for p in cluster.launcher.leftover_clients(marks)]
    assert left == [], f"processes of the cluster left: {left}"
    assert cluster.host.processes() == []


# -- the configs, offline ------------------------------------------------------------------------
def _prepared(path: str) -> dict:
    """The config as `ray up` sees it: Ray's own preparation (defaults merged, node types) and
    validation (its JSON schema and cross-field checks)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    with open(path) as f:
        config = yaml.safe_load(f)
    prepared = prepare_config(config)
    validate_config(prepared)
    return prepared


def _cloudformation(path: str) -> dict:
    """A CloudFormation template as data (its !Sub, !Ref, !GetAtt tags kept as plain values)."""
    class Loader(yaml.SafeLoader):
        pass

    def tagged(loader, suffix, node):
        if isinstance(node, yaml.ScalarNode):
            return loader.construct_scalar(node)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node)
        return loader.construct_mapping(node)

    Loader.add_multi_constructor("!", tagged)
    with open(path) as f:
        return yaml.load(f, Loader=Loader)


def test_local_yaml_is_a_valid_cluster_config():
    config = _prepared(LOCAL_YAML)
    assert config["provider"] == {"type": "local", "head_ip": "127.0.0.1", "worker_ips": []}
    assert not config.get("docker", {}).get("image")
    starts = " ".join(config["head_start_ray_commands"])
    assert "RAY_AUTH_MODE=token ray start --head" in starts and "--dashboard-port=8265" in starts
    assert any("ray get-auth-token --generate" in c for c in config["head_setup_commands"])
    assert not any("pip install" in c for c in config["setup_commands"])  # the head is this machine


def test_aws_yaml_is_a_valid_cluster_config():
    import ray

    pytest.importorskip("boto3", reason="Ray's AWS provider needs boto3 (in the dev extra)")
    from ray.autoscaler._private.providers import _get_node_provider_cls

    config = _prepared(AWS_YAML)
    provider = _get_node_provider_cls(config["provider"])
    assert provider.__name__ == "AWSNodeProvider"
    assert not config.get("docker", {}).get("image"), "docker stays off"
    types = config["available_node_types"]
    head = config["head_node_type"]
    workers = [t for t in types if t != head]
    assert workers and config["max_workers"] >= max(types[t]["min_workers"] for t in workers) >= 1

    # every node_config is a valid EC2 RunInstances request (botocore's service model, offline);
    # Ray adds the count, subnet, security group, key and tags when it launches
    import botocore.session
    from botocore.validate import ParamValidator

    run_instances = botocore.session.get_session().get_service_model("ec2").operation_model("RunInstances")
    instance_types = set(run_instances.input_shape.members["InstanceType"].enum)
    for name, node_type in types.items():
        node = node_type["node_config"]
        report = ParamValidator().validate(dict(node, MinCount=1, MaxCount=1), run_instances.input_shape)
        assert not report.has_errors(), f"{name}: {report.generate_report()}"
        assert node["InstanceType"] in instance_types, f"{name}: unknown instance type {node['InstanceType']}"
        assert node["ImageId"].startswith(("ami-", "resolve:ssm:")), name

    # the instance profiles it names are those cluster/aws-iam.yaml creates, and that template lints clean
    iam = _cloudformation(AWS_IAM)
    defaults = {p: iam["Parameters"][p]["Default"] for p in ("HeadRoleName", "WorkerRoleName")}
    assert types[head]["node_config"]["IamInstanceProfile"] == {"Name": defaults["HeadRoleName"]}
    for t in workers:
        assert types[t]["node_config"]["IamInstanceProfile"] == {"Name": defaults["WorkerRoleName"]}
    cfnlint = pytest.importorskip("cfnlint.api", reason="cfn-lint is in the dev extra: pip install -e '.[dev]'")
    assert [str(m) for m in cfnlint.lint_file(cfnlint.Path(AWS_IAM) if hasattr(cfnlint, "Path") else AWS_IAM)] == []

    # setup installs this Ray version (the launcher's and the cluster's must match) and puffindb
    # from the mounted source, with nothing else to fetch by hand
    setup = "\n".join(config["setup_commands"])
    assert f'"ray[default]=={ray.__version__}"' in setup
    assert '"$HOME/puffin[iceberg,lambda]"' in setup
    # the mounts exist relative to the repository root and are small: Ray hashes every byte of
    # them on each `ray up` (a mount of the checkout would hash .venv and data/)
    total = 0
    for remote, local in config["file_mounts"].items():
        if local.startswith("~"):
            assert remote == "~/.ray/auth_token" == local  # the laptop's Ray token
            continue
        path = os.path.join(REPO, local)
        assert os.path.exists(path), f"file mount {remote}: {local} is not in the checkout"
        assert os.path.realpath(path) != REPO
        for dirpath, _, files in os.walk(path):
            total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    assert total < 50 * 2**20, f"file mounts hold {total / 2**20:.0f} MiB"
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token ray start" in c for c in starts if "ray start" in c)
