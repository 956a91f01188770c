"""cluster/lambda: the template lints clean with cfn-lint, deploys through the boto3 deploy module
(against moto's CloudFormation server), and the image's handler imports without Ray or boto3."""

from __future__ import annotations

import ast
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse

import pytest

from puffin.errors import PuffinError

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LAMBDA_DIR = os.path.join(ROOT, "cluster", "lambda")
TEMPLATE = os.path.join(LAMBDA_DIR, "template.yaml")
def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/puffin:1"


def test_template_lints_clean():
    cfnlint = pytest.importorskip("cfnlint.api", reason="cfn-lint is in the dev extra: pip install -e '.[dev]'")
    matches = cfnlint.lint_file(cfnlint.Path(TEMPLATE) if hasattr(cfnlint, "Path") else TEMPLATE)
    assert [str(m) for m in matches] == []


def test_image_handler_imports_without_ray_or_boto3():
    code = ("import sys; sys.modules['ray'] = None; sys.modules['boto3'] = None; sys.modules['botocore'] = None\n"
            "import puffin.lambda_bridge, puffin.lambda_bridge.handler as h\n"
            "assert callable(h.handler) and callable(h.catalog_handler)")
    env = {**os.environ, "AWS_LAMBDA_FUNCTION_NAME": "puffin-engine", "PUFFIN_LAMBDA_CACHE_BYTES": "0"}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env, timeout=60)
    docker = _read(os.path.join(LAMBDA_DIR, "Dockerfile"))
    assert docker.startswith("#") and "FROM public.ecr.aws/lambda/provided:al2023" in docker
    assert 'CMD ["puffin.lambda_bridge.handler.handler"]' in docker
    template = _read(TEMPLATE)
    assert "puffin.lambda_bridge.handler.catalog_handler" in template
    for src in re.findall(r"^COPY (\S+)", docker, re.MULTILINE):
        assert os.path.exists(os.path.join(ROOT, src)), src


def test_function_requirements_follow_pyproject():
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    wanted = {re.split(r"[\[<>=]", d)[0]: d for d in project["dependencies"] + project["optional-dependencies"]["iceberg"]}
    text = _read(os.path.join(LAMBDA_DIR, "requirements.txt"))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and ln[0] != "#"]
    for line in lines:
        name = re.split(r"[\[<>=]", line)[0]
        assert name in wanted, f"{name} is not a dependency of puffindb"
        assert re.sub(r"^[^<>=]*", "", line) == re.sub(r"^[^<>=]*", "", wanted[name]), (line, wanted[name])
    assert "ray" not in {re.split(r"[\[<>=]", ln)[0] for ln in lines}


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory):
    pytest.importorskip("moto.server", reason="moto[server] is in the dev extra: pip install -e '.[dev]'")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)], stdout=out,
                                stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def aws_env(monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)


def test_deploy_creates_then_updates_the_stack(moto_endpoint, aws_env, capsys):
    import boto3

    from puffin.lambda_bridge import deploy

    argv = ["--image-uri", IMAGE, "--stack", "puffin-test", "--data-bucket", "lake", "--data-prefix", "tables/",
            "--region", "us-east-1", "--endpoint-url", moto_endpoint]
    assert deploy.main(argv) == 0
    assert '"function": "puffin-engine"' in capsys.readouterr().out
    lam = boto3.client("lambda", endpoint_url=moto_endpoint)
    engine = lam.get_function(FunctionName="puffin-engine")
    assert engine["Code"]["ImageUri"] == IMAGE
    catalog = lam.get_function_configuration(FunctionName="puffin-catalog")
    assert catalog["Role"] == engine["Configuration"]["Role"]  # (moto keeps no PackageType/ImageConfig from CloudFormation)
    iam = boto3.client("iam", endpoint_url=moto_endpoint)
    role = engine["Configuration"]["Role"].rsplit("/", 1)[1]
    actions = set()
    for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        doc = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
        if isinstance(doc, str):  # moto hands back the document as a Python literal
            doc = ast.literal_eval(urllib.parse.unquote(doc))
        for st in doc["Statement"]:
            acts = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            actions.update(acts)
            resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
            assert "*" not in resources  # every grant names its bucket, prefix or log group
            if st["Action"] == "s3:GetObject":
                assert resources == ["arn:aws:s3:::lake/tables/*"]
    assert actions == {"logs:CreateLogStream", "logs:PutLogEvents", "s3:GetObject", "s3:ListBucket", "s3:PutObject"}
    logs = boto3.client("logs", endpoint_url=moto_endpoint)
    groups = logs.describe_log_groups(logGroupNamePrefix="/aws/lambda/puffin-")["logGroups"]
    assert {g["logGroupName"]: g.get("retentionInDays") for g in groups} == {
        "/aws/lambda/puffin-engine": 14, "/aws/lambda/puffin-catalog": 14}
    # a second deploy updates the same stack
    out = deploy.deploy("puffin-test", IMAGE, {"DataBucket": "lake", "ResultsBucket": "lake", "EngineMemoryMB": "1769"},
                        region="us-east-1", endpoint_url=moto_endpoint)
    assert out["EngineFunctionName"] == "puffin-engine"
    cfn = boto3.client("cloudformation", endpoint_url=moto_endpoint)
    assert cfn.describe_stacks(StackName="puffin-test")["Stacks"][0]["StackStatus"] in ("UPDATE_COMPLETE", "CREATE_COMPLETE")


def test_deploy_errors_are_clear(moto_endpoint, aws_env):
    from puffin.lambda_bridge import deploy

    with pytest.raises(PuffinError, match="image-uri"):
        deploy.deploy("x", "", {}, endpoint_url=moto_endpoint)
    with pytest.raises(PuffinError, match="no CloudFormation template"):
        deploy.deploy("x", IMAGE, {}, endpoint_url=moto_endpoint, template="/nonexistent.yaml")
    with pytest.raises(PuffinError, match="puffin-bad"):
        deploy.deploy("puffin-bad", IMAGE, {}, region="us-east-1", endpoint_url=moto_endpoint)  # no DataBucket
