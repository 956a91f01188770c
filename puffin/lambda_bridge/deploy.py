"""Deploy the Engine and Catalog functions: a CloudFormation stack from an image URI, on boto3.

    python -m puffin.lambda_bridge.deploy --image-uri 123456789012.dkr.ecr.us-east-1.amazonaws.com/puffin:1 \\
        --stack puffin-lambda --data-bucket my-lake --results-bucket my-lake [--region us-east-1]

Creates the stack from ``cluster/lambda/template.yaml`` (or ``--template``), or updates it when it
exists ("no updates" is not an error), waits for it, and prints the outputs and the
``puffin.connect(lambda_=...)`` settings to use. ``--endpoint-url`` points at another
CloudFormation endpoint (the tests use moto's server).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from puffin.errors import PuffinError

TEMPLATE = os.path.join(os.path.dirname(__file__), "..", "..", "cluster", "lambda", "template.yaml")
CAPABILITIES = ["CAPABILITY_IAM"]


def template_path(path: str | None = None) -> str:
    path = os.path.abspath(path or TEMPLATE)
    if not os.path.exists(path):
        raise PuffinError(f"no CloudFormation template at {path}: pass --template (cluster/lambda/template.yaml "
                          "in the Puffin repository)")
    return path


def deploy(stack: str, image_uri: str, parameters: dict[str, str], region: str | None = None,
           endpoint_url: str | None = None, template: str | None = None, wait: bool = True,
           client: Any = None) -> dict[str, str]:
    """Create or update ``stack``; its outputs (after it settles, unless ``wait`` is false)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError, WaiterError

    if not image_uri:
        raise PuffinError("--image-uri is required (an ECR image built from cluster/lambda/Dockerfile)")
    cfn = client or boto3.client("cloudformation", region_name=region, endpoint_url=endpoint_url)
    with open(template_path(template)) as f:
        body = f.read()
    params = [{"ParameterKey": "ImageUri", "ParameterValue": image_uri}]
    params += [{"ParameterKey": k, "ParameterValue": str(v)} for k, v in sorted(parameters.items())]
    args = {"StackName": stack, "TemplateBody": body, "Parameters": params, "Capabilities": CAPABILITIES,
            "Tags": [{"Key": "app", "Value": "puffin"}]}
    exists = _exists(cfn, stack)
    try:
        if exists:
            cfn.update_stack(**args)
            waiter = "stack_update_complete"
        else:
            cfn.create_stack(**args)
            waiter = "stack_create_complete"
    except ClientError as e:
        msg = e.response.get("Error", {}).get("Message", str(e))
        if "No updates are to be performed" in msg:
            return outputs(cfn, stack)
        raise PuffinError(f"CloudFormation refused stack {stack}: {msg}") from None
    except BotoCoreError as e:
        raise PuffinError(f"cannot deploy stack {stack}: {e}") from None
    if wait:
        try:
            cfn.get_waiter(waiter).wait(StackName=stack, WaiterConfig={"Delay": 5, "MaxAttempts": 180})
        except WaiterError as e:
            raise PuffinError(f"stack {stack} did not deploy: {e}; {_failures(cfn, stack)}") from None
    return outputs(cfn, stack)


def _exists(cfn, stack: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        stacks = cfn.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as e:
        if "does not exist" in str(e):
            return False
        raise
    return bool(stacks) and stacks[0]["StackStatus"] != "DELETE_COMPLETE"


def outputs(cfn, stack: str) -> dict[str, str]:
    desc = cfn.describe_stacks(StackName=stack)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in desc.get("Outputs", [])}


def _failures(cfn, stack: str) -> str:
    try:
        events = cfn.describe_stack_events(StackName=stack)["StackEvents"]
    except Exception:  # noqa: BLE001 - best effort: the waiter's error is reported anyway
        return "no stack events"
    bad = [f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason', '')}" for e in events
           if e.get("ResourceStatus", "").endswith("FAILED")]
    return "; ".join(bad[:5]) or "no failed resources reported"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m puffin.lambda_bridge.deploy", description=__doc__.split("\n")[0])
    p.add_argument("--image-uri", required=True)
    p.add_argument("--stack", default="puffin-lambda")
    p.add_argument("--data-bucket", required=True)
    p.add_argument("--data-prefix", default="")
    p.add_argument("--results-bucket", help="default: the data bucket")
    p.add_argument("--results-prefix", default="puffin-results")
    p.add_argument("--region")
    p.add_argument("--endpoint-url")
    p.add_argument("--template")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="any other template parameter")
    p.add_argument("--no-wait", action="store_true")
    a = p.parse_args(argv)
    params = {"DataBucket": a.data_bucket, "DataPrefix": a.data_prefix,
              "ResultsBucket": a.results_bucket or a.data_bucket, "ResultsPrefix": a.results_prefix}
    for kv in a.param:
        k, sep, v = kv.partition("=")
        if not sep:
            p.error(f"--param {kv!r}: expected KEY=VALUE")
        params[k] = v
    try:
        out = deploy(a.stack, a.image_uri, params, a.region, a.endpoint_url, a.template, wait=not a.no_wait)
    except PuffinError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(out, indent=2))
    if "EngineFunctionName" in out:
        settings = {"function": out["EngineFunctionName"], "catalog_function": out.get("CatalogFunctionName"),
                    "results_url": out.get("ResultsUrl"), "region": a.region or "(your region)", "offload": "auto"}
        print(f"puffin.connect(lambda_={json.dumps(settings)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
