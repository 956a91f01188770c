"""How Puffin reaches Spark for Iceberg writes: ``puffin.connect(spark={...})``.

One frozen ``SparkSettings`` holds every option of every mode, so a connection can be checked
once, up front, and the same value handed to whichever client runs the jobs:

- ``mode="local"`` (the default): pyspark on this machine, one long-lived driver process
  (``puffin.spark.local.LocalSpark``); ``master``, ``driver_memory``, ``extra_jars``, ``conf``.
- ``mode="emr"``: steps on a running EMR cluster (``cluster_id``); ``mode="emr-serverless"``:
  job runs of an EMR Serverless application (``application_id``, ``execution_role_arn``). Both
  stage the driver script, job files, inputs and results under ``staging`` (an ``s3://``
  prefix) and poll every ``poll_s`` seconds (``puffin.spark.emr``).
- ``mode="off"``: no Spark; statements that need it raise ``NotSupportedError``.

``timeout_s`` bounds each job in every mode (None: no limit).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from puffin.errors import PuffinError

MODES = ("local", "emr", "emr-serverless", "off")


@dataclass(frozen=True)
class SparkSettings:
    mode: str = "local"
    # local
    master: str = "local[2]"
    driver_memory: str = "1g"
    extra_jars: tuple[str, ...] = ()
    conf: dict[str, str] = field(default_factory=dict)  # extra Spark conf, applied last (wins)
    timeout_s: float | None = None
    # emr / emr-serverless
    cluster_id: str | None = None
    application_id: str | None = None
    execution_role_arn: str | None = None
    region: str | None = None
    endpoint_url: str | None = None
    staging: str | None = None  # s3://bucket/prefix/ for the driver, job files, inputs, results
    poll_s: float = 5.0
    spark_submit_args: tuple[str, ...] = ()

    @classmethod
    def resolve(cls, d: dict[str, Any] | None) -> SparkSettings:
        """Check and normalise ``puffin.connect(spark=...)``; PuffinError names the valid keys."""
        d = dict(d or {})
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise PuffinError(f"unknown spark setting(s) {unknown}; valid: {', '.join(valid)}")
        mode = d.get("mode", "local")
        if mode not in MODES:
            raise PuffinError(f"spark mode {mode!r} is not one of {', '.join(MODES)}")
        out: dict[str, Any] = {"mode": mode}
        for name in ("master", "driver_memory", "cluster_id", "application_id", "execution_role_arn",
                     "region", "endpoint_url", "staging"):
            if d.get(name) is not None:
                out[name] = _text(name, d[name])
        for name in ("timeout_s", "poll_s"):
            if d.get(name) is not None:
                out[name] = _positive(name, d[name])
        for name in ("extra_jars", "spark_submit_args"):
            if d.get(name) is not None:
                value = d[name]
                if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                    raise PuffinError(f"spark setting {name!r} must be a list of strings, got {value!r}")
                out[name] = tuple(value)
        if d.get("conf") is not None:
            if not isinstance(d["conf"], dict):
                raise PuffinError(f"spark setting 'conf' must be a dict of Spark conf, got {d['conf']!r}")
            out["conf"] = {str(k): _conf_value(v) for k, v in d["conf"].items()}
        settings = cls(**out)
        settings._check_mode()
        return settings

    def _check_mode(self) -> None:
        if self.mode == "emr" and not self.cluster_id:
            raise PuffinError("spark mode 'emr' needs cluster_id (a running EMR cluster, j-...)")
        if self.mode == "emr-serverless" and not (self.application_id and self.execution_role_arn):
            raise PuffinError("spark mode 'emr-serverless' needs application_id and execution_role_arn")
        if self.mode in ("emr", "emr-serverless") and not (self.staging or "").startswith("s3://"):
            raise PuffinError(f"spark mode {self.mode!r} needs staging, an s3:// prefix for the driver, "
                              f"job files, inputs and results (got {self.staging!r})")


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise PuffinError(f"spark setting {name!r} must be a non-empty string, got {value!r}")
    return value


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise PuffinError(f"spark setting {name!r} must be a positive number of seconds, got {value!r}")
    return float(value)


def _conf_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)
