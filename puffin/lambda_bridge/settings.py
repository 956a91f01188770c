"""``LambdaSettings``: which functions run offloaded fragments, where, and when.

Read from ``puffin.connect(lambda_={...})`` (a dict) on top of the environment
(``PUFFIN_LAMBDA_<SETTING>``, e.g. ``PUFFIN_LAMBDA_FUNCTION``; see ``ENV``):

- ``function``: the Engine function's name or ARN; ``catalog_function``: the Catalog function's
- ``group``: ``name[:qualifier]`` members (comma list in the environment) the fragments are spread
  over by file, so each file's bytes stay warm in one member's instances; empty: ``function``
- ``region`` (else ``AWS_REGION``/``AWS_DEFAULT_REGION``); ``endpoint_url`` (else
  ``AWS_ENDPOINT_URL_LAMBDA``): a local service
- ``max_concurrency``: invocations in flight
- ``max_attempts``: invocations per fragment, the first included, before it runs on Ray;
  ``backoff`` / ``max_backoff``: seconds, the first wait's bound and any wait's cap (jittered,
  exponential; see ``puffin.lambda_bridge.retry`` for what is retried)
- ``offload``: ``never | auto | always``; ``auto_factor``: auto offloads when scan fragments
  exceed that many times the free Ray slots
- ``mode``: ``sync`` (RequestResponse) or ``event`` (Event invocation, results over S3)
- ``function_timeout``: seconds, as deployed (the client's read timeout is above it)
- ``results_url``: ``s3://bucket/prefix`` for results over the 6 MB inline limit
- ``forward_credentials``: send the driver's S3 keys with each fragment
- ``plan_iceberg``: ``local`` (pyiceberg in the driver) or ``lambda``: the Catalog function
  (``catalog_function``) lists an Iceberg snapshot's files with the pushed filter, so a big
  table's manifests are read next to the data (``puffin.lambda_bridge.catalog``)

``forward_credentials`` defaults to true only with an ``endpoint_url`` (a local service); on AWS
the functions use their execution role and no secret travels in a payload.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from typing import Any

from puffin.errors import PuffinError

OFFLOAD = ("never", "auto", "always")
MODES = ("sync", "event")
PLAN_ICEBERG = ("local", "lambda")
_NAME = re.compile(r"^(arn:aws[a-zA-Z-]*:lambda:[a-z0-9-]+:\d{12}:function:)?[A-Za-z0-9_-]{1,64}(:[A-Za-z0-9$_-]+)?$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
ENV = {
    "function": "PUFFIN_LAMBDA_FUNCTION", "catalog_function": "PUFFIN_LAMBDA_CATALOG_FUNCTION",
    "group": "PUFFIN_LAMBDA_GROUP", "region": "PUFFIN_LAMBDA_REGION", "endpoint_url": "PUFFIN_LAMBDA_ENDPOINT_URL",
    "max_concurrency": "PUFFIN_LAMBDA_MAX_CONCURRENCY", "offload": "PUFFIN_LAMBDA_OFFLOAD",
    "auto_factor": "PUFFIN_LAMBDA_AUTO_FACTOR", "mode": "PUFFIN_LAMBDA_MODE",
    "function_timeout": "PUFFIN_LAMBDA_FUNCTION_TIMEOUT", "results_url": "PUFFIN_LAMBDA_RESULTS_URL",
    "max_attempts": "PUFFIN_LAMBDA_MAX_ATTEMPTS", "forward_credentials": "PUFFIN_LAMBDA_FORWARD_CREDENTIALS",
    "backoff": "PUFFIN_LAMBDA_BACKOFF", "max_backoff": "PUFFIN_LAMBDA_MAX_BACKOFF",
    "plan_iceberg": "PUFFIN_LAMBDA_PLAN_ICEBERG",
}


@dataclass(frozen=True)
class LambdaSettings:
    function: str = "puffin-engine"
    catalog_function: str | None = None
    group: tuple[str, ...] = ()  # "name[:qualifier]" members; empty: just ``function``
    region: str = "us-east-1"
    endpoint_url: str | None = None
    max_concurrency: int = 100
    offload: str = "never"
    auto_factor: float = 2.0
    mode: str = "sync"
    function_timeout: float = 900.0
    results_url: str | None = None
    max_attempts: int = 3
    forward_credentials: bool = False
    backoff: float = 0.1
    max_backoff: float = 2.0
    plan_iceberg: str = "local"

    @property
    def members(self) -> tuple[tuple[str, str | None], ...]:
        """The function group as (name, qualifier) pairs."""
        out = []
        for m in self.group or (self.function,):
            if m.startswith("arn:"):
                parts = m.split(":")
                out.append((":".join(parts[:7]), parts[7] if len(parts) > 7 else None))
            else:
                name, _, qual = m.partition(":")
                out.append((name, qual or None))
        return tuple(out)

    @classmethod
    def resolve(cls, overrides: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> LambdaSettings:
        """Defaults, then the environment, then ``overrides``; every value validated."""
        env = os.environ if env is None else env
        given: dict[str, Any] = {}
        for name, var in ENV.items():
            if env.get(var) not in (None, ""):
                given[name] = env[var]
        if "region" not in given and (env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")):
            given["region"] = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        if "endpoint_url" not in given and env.get("AWS_ENDPOINT_URL_LAMBDA"):
            given["endpoint_url"] = env["AWS_ENDPOINT_URL_LAMBDA"]
        o = dict(overrides or {})
        unknown = set(o) - set(ENV)
        if unknown:
            raise PuffinError(f"unknown lambda setting(s) {sorted(unknown)}; valid: {', '.join(ENV)}")
        given.update({k: v for k, v in o.items() if v is not None})
        if "forward_credentials" not in given:
            given["forward_credentials"] = bool(given.get("endpoint_url"))
        return cls(**{k: _convert(k, v, var=ENV[k], from_env=k not in o) for k, v in given.items()})

    def __post_init__(self) -> None:
        def bad(name: str, why: str):
            raise PuffinError(f"lambda setting '{name}' ({ENV[name]}): {why}")

        for name in ("function", "catalog_function"):
            v = getattr(self, name)
            if v is not None and not _NAME.match(v):
                bad(name, f"{v!r} is not a Lambda function name or ARN")
        for m in self.group:
            if not _NAME.match(m):
                bad("group", f"member {m!r} is not a function name[:qualifier] or ARN")
        if not _REGION.match(self.region):
            bad("region", f"{self.region!r} is not an AWS region name (like us-east-1)")
        if self.endpoint_url is not None and not re.match(r"^https?://[^/\s]+", self.endpoint_url):
            bad("endpoint_url", f"{self.endpoint_url!r} is not an http(s) URL")
        if not 1 <= self.max_concurrency <= 100_000:
            bad("max_concurrency", f"{self.max_concurrency} is not between 1 and 100000")
        if self.offload not in OFFLOAD:
            bad("offload", f"{self.offload!r}; valid: {' | '.join(OFFLOAD)}")
        if self.mode not in MODES:
            bad("mode", f"{self.mode!r}; valid: {' | '.join(MODES)}")
        if self.plan_iceberg not in PLAN_ICEBERG:
            bad("plan_iceberg", f"{self.plan_iceberg!r}; valid: {' | '.join(PLAN_ICEBERG)}")
        if self.plan_iceberg == "lambda" and not self.catalog_function:
            bad("catalog_function", "plan_iceberg='lambda' plans on the Catalog function: name it (as deployed, "
                "e.g. puffin-catalog)")
        if not 0 <= self.backoff <= 60:
            bad("backoff", f"{self.backoff} is not between 0 and 60 seconds")
        if not self.backoff <= self.max_backoff <= 300:
            bad("max_backoff", f"{self.max_backoff} is not between backoff ({self.backoff}) and 300 seconds")
        if not self.auto_factor > 0:
            bad("auto_factor", "must be positive")
        if not 0 < self.function_timeout <= 900:
            bad("function_timeout", f"{self.function_timeout} is not in (0, 900] seconds")
        if not 1 <= self.max_attempts <= 10:
            bad("max_attempts", f"{self.max_attempts} is not between 1 and 10")
        if self.results_url is not None and not re.match(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$",
                                                         self.results_url):
            bad("results_url", f"{self.results_url!r} is not an s3://bucket/prefix URL")
        if self.mode == "event" and self.results_url is None:
            bad("results_url", "the event (asynchronous) mode returns results through S3: set results_url")

    def replace(self, **changes: Any) -> LambdaSettings:
        return dataclasses.replace(self, **changes)


def _convert(name: str, value: Any, var: str, from_env: bool) -> Any:
    where = f"lambda setting '{name}'" + (f" (from {var})" if from_env else "")
    field_type = {f.name: f.type for f in dataclasses.fields(LambdaSettings)}[name]
    try:
        if name == "group":
            return tuple(p.strip() for p in value.split(",") if p.strip()) if isinstance(value, str) else tuple(value)
        if field_type == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if field_type == "float":
            return float(value)
        if field_type == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(value)
            return text in ("1", "true", "yes")
        if name in ("offload", "mode", "plan_iceberg"):
            return str(value).strip().lower()
        if not isinstance(value, str):
            raise TypeError(value)
        return value
    except (TypeError, ValueError):
        raise PuffinError(f"{where}: cannot read {value!r} as {field_type}") from None
