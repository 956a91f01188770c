"""The Lambda bridge: scan fragments run on AWS Lambda (or the local stand-in), Arrow comes back.

- ``handler`` / ``catalog_handler`` (``puffin.lambda_bridge.handler``): the function entry points.
- ``Invoker`` (``.invoker``): the driver's boto3 client; ``LambdaSettings`` (``.settings``).
- ``LambdaUnavailable`` / ``LambdaQueryError`` (``.errors``): run it on Ray instead / a real failure.
- ``offloadable`` / ``auto_offload`` / ``HashRing`` (``.routing``): what may go, when, and where.
- ``decide`` / ``QueryOffload`` (``.offload``): one query's offload decision per stage, its
  invocations, fallbacks and EXPLAIN ANALYZE lines (used by ``puffin.runtime`` and the session).
- ``RetryPolicy`` (``.retry``): what is invoked again (429, 5xx, transient function errors),
  how often and after what jittered backoff; botocore's own retries are off.
- ``CatalogPlanner`` (``.catalog``): Iceberg scans planned on the Catalog function
  (``plan_iceberg="lambda"``), planned here when it cannot.
- ``python -m puffin.lambda_bridge.local``: a local Invoke API service (``.service``, ``.worker``);
  ``python -m puffin.lambda_bridge.deploy``: the CloudFormation stack.

Importing this package imports neither boto3 nor the handler's DuckDB state.
"""

from puffin.lambda_bridge.errors import LambdaQueryError, LambdaUnavailable
from puffin.lambda_bridge.invoker import InvokeInfo, Invoker
from puffin.lambda_bridge.routing import HashRing, auto_offload, offloadable
from puffin.lambda_bridge.settings import LambdaSettings

__all__ = ["HashRing", "InvokeInfo", "Invoker", "LambdaQueryError", "LambdaSettings", "LambdaUnavailable",
           "auto_offload", "offloadable"]
