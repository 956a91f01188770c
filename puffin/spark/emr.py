"""Spark jobs on Amazon EMR: steps on a running cluster (``EmrStepsClient``) or job runs of an
EMR Serverless application (``EmrServerlessClient``).

Both run Puffin's own driver script (``puffin/spark/driver.py``, the file local Spark runs too)
with ``spark-submit``, and reach AWS through boto3 only:

1. Stage under ``settings.staging`` (``s3://bucket/prefix/``): ``driver/<sha256>/driver.py``
   once per client (content-addressed, so a changed script never overwrites one a running job
   uses), and per job ``jobs/<job id>/``: ``inputs/<name>/...`` (inputs that are local files or
   directories; ``s3://`` inputs are read where they are) and ``job.json`` (the driver's job:
   conf, inputs, statements, where to put ``result/`` and ``report.json``).
2. Submit an EMR step (``command-runner.jar`` running ``spark-submit --deploy-mode cluster
   <spark_submit_args> <driver> --job <job.json>``; ActionOnFailure CONTINUE, so a failed job
   never stops the cluster), or an EMR Serverless ``start_job_run`` (entry point the driver,
   arguments ``--job <job.json>``, ``spark_submit_args`` and the catalog conf as
   ``sparkSubmitParameters``, driver logs to ``<staging>logs/``).
3. Poll every ``poll_s`` seconds until the step or job run ends. Each state change is logged
   on the ``puffin.spark.emr`` logger, passed to ``progress(state, text)`` when one is given,
   and kept in ``last_run["states"]``. Past the timeout (``run(timeout=)``, else
   ``settings.timeout_s``) or on Ctrl-C the step / job run is cancelled and ``QueryCancelled``
   raised.
4. Read the driver's report (and the result Parquet when the job wants rows) and delete the
   staged inputs and result; ``job.json`` and ``report.json`` stay for the record (an S3
   lifecycle rule on the staging prefix can expire them).

Errors: a failed statement is ``ExecutionError`` with Spark's message from the report; a step
or job run that ended without a report names its state, EMR's failure details and where its
logs are; AWS refusing a call (no such cluster, access denied, missing bucket) is a
``PuffinError`` naming the resource, the cause and the IAM action, without botocore's wording.

Credentials: the S3 settings' keys when they have any (one account for data and compute), else
boto3's default chain (instance profile, SSO, ``AWS_PROFILE``). Retries are botocore's
``standard`` mode with the S3 settings' ``max_attempts``.
"""

from __future__ import annotations

import abc
import hashlib
import io
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Callable
from importlib import resources

import pyarrow as pa
import pyarrow.parquet as pq

from puffin.errors import ExecutionError, PuffinError, QueryCancelled
from puffin.spark.client import SparkClient, SparkInput, SparkJob, SparkReport
from puffin.spark.conf import spark_conf
from puffin.spark.settings import SparkSettings
from puffin.storage import S3Config, scrub

log = logging.getLogger("puffin.spark.emr")

Progress = Callable[[str, str], None]  # (state, one line saying what happened)
_SECRET_WORDS = ("secret", "password", "token", "access-key", "credential")
_NOT_FOUND = ("ResourceNotFoundException", "NoSuchCluster", "ResourceNotFound")
_DENIED = ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnrecognizedClientException",
           "InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException", "InvalidSignatureException",
           "SignatureDoesNotMatch", "InvalidAccessKeyId", "403")


def split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.split("://", 1)[1].partition("/")
    return bucket, key


class _EmrClient(SparkClient):
    """What steps and Serverless share: staging, polling, reports, errors. Subclasses say how
    to check the target, submit, read the state, cancel, and explain a failure."""

    service = ""  # boto3 service name
    iam_prefix = ""  # IAM action prefix, for "the credentials need ..."
    terminal: frozenset[str] = frozenset()
    succeeded = ""

    def __init__(self, settings: SparkSettings, catalogs: dict[str, dict], s3: S3Config,
                 progress: Progress | None = None):
        if not (settings.staging or "").startswith("s3://"):
            raise PuffinError(f"spark mode {settings.mode!r} needs staging, an s3:// prefix (got {settings.staging!r})")
        self.settings, self.catalogs, self.s3 = settings, catalogs, s3
        self.progress = progress
        self.region = settings.region or s3.region or "us-east-1"
        self.staging = settings.staging.rstrip("/") + "/"
        self.conf = spark_conf(catalogs, s3, settings)
        self.last_run: dict | None = None  # {"id", "job", "states": [(state, seconds since start)]}
        self._clients: dict[str, object] = {}
        self._driver_uri: str | None = None
        self._checked = False

    # -- what steps and Serverless do differently ----------------------------------------------
    @abc.abstractmethod
    def target(self) -> str:
        """The cluster or application, for messages."""

    @abc.abstractmethod
    def describe(self, run_id: str) -> str:
        """The step or job run, for messages."""

    @abc.abstractmethod
    def _check(self) -> None:
        """Once per client: the target exists and can take work (PuffinError if not)."""

    @abc.abstractmethod
    def _submit(self, driver_uri: str, job_uri: str, job_id: str, timeout: float | None) -> str:
        """Start the driver on the job; the step / job run id."""

    @abc.abstractmethod
    def _state(self, run_id: str) -> tuple[str, str]:
        """(state, EMR's message about it)."""

    @abc.abstractmethod
    def _cancel(self, run_id: str) -> None: ...

    @abc.abstractmethod
    def _failure_detail(self, run_id: str) -> str:
        """EMR's reason for a failure, and where the logs are."""

    # -- running a job -------------------------------------------------------------------------
    def run(self, job: SparkJob, timeout: float | None = None) -> SparkReport:
        started = time.monotonic()
        timeout = self.settings.timeout_s if timeout is None else timeout
        if not self._checked:
            self._check()
            self._checked = True
        job_id = f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"
        base = f"{self.staging}jobs/{job_id}/"
        doc = {
            "conf": self.conf,
            "inputs": [{"name": i.name, "path": self._stage_input(i, base), "format": i.format} for i in job.inputs],
            "statements": list(job.statements),
            "values": list(job.values),
            "result": f"{base}result/" if job.want_result else None,
            "report": f"{base}report.json",
        }
        job_uri = f"{base}job.json"
        self._put(job_uri, json.dumps(doc, indent=1).encode())
        run_id = self._submit(self._driver(), job_uri, job_id, timeout)
        self.last_run = {"id": run_id, "job": job_uri, "states": []}
        log.info("%s submitted: %d statement(s), job %s", self.describe(run_id), len(job.statements), job_uri)
        state = self._wait(run_id, started, timeout)
        report = self._get_json(doc["report"])
        if state != self.succeeded or not report or not report.get("ok"):
            raise self._failure(run_id, state, report, job.statements, doc["report"])
        result = self._result(doc["result"], report.get("columns")) if job.want_result else None
        self._delete_prefix(f"{base}inputs/")
        self._delete_prefix(f"{base}result/")
        return SparkReport(result=result, statements=report.get("statements") or [],
                           seconds=round(time.monotonic() - started, 3), log_tail=report.get("log_tail") or "")

    def close(self) -> None:
        self._clients.clear()  # nothing runs between calls: run() waits for its job to end

    def _wait(self, run_id: str, started: float, timeout: float | None) -> str:
        last = None
        try:
            while True:
                try:
                    state, message = self._state(run_id)
                except PuffinError as e:
                    raise PuffinError(f"lost track of {self.describe(run_id)}, which may still be running: {e}") from None
                if state != last:
                    self._surface(run_id, state, message, started)
                    last = state
                if state in self.terminal:
                    return state
                left = None if timeout is None else started + timeout - time.monotonic()
                if left is not None and left <= 0:
                    self._cancel_quietly(run_id)
                    raise QueryCancelled(f"{self.describe(run_id)} ran past its timeout of {timeout:g}s "
                                         f"and was cancelled (last state {state})")
                time.sleep(self.settings.poll_s if left is None else min(self.settings.poll_s, left))
        except KeyboardInterrupt:
            self._cancel_quietly(run_id)
            raise QueryCancelled(f"{self.describe(run_id)} was interrupted and cancelled") from None

    def _surface(self, run_id: str, state: str, message: str, started: float) -> None:
        elapsed = time.monotonic() - started
        self.last_run["states"].append((state, round(elapsed, 3)))
        text = f"{self.describe(run_id)}: {state}{f' ({message})' if message else ''} after {elapsed:.1f}s"
        log.info(text)
        if self.progress is not None:
            self.progress(state, text)

    def _cancel_quietly(self, run_id: str) -> None:
        """Ask AWS to stop the job; a failure to ask is logged, the QueryCancelled still raised."""
        try:
            self._cancel(run_id)
            log.info("%s: cancel requested", self.describe(run_id))
        except PuffinError as e:
            log.warning("%s could not be cancelled: %s", self.describe(run_id), e)

    def _failure(self, run_id: str, state: str, report: dict | None, statements: list[str],
                 report_uri: str) -> ExecutionError:
        where = self.describe(run_id)
        if report and not report.get("ok"):
            i = report.get("failed")
            which = ""
            if isinstance(i, int) and 0 <= i < len(statements):
                sql = " ".join(statements[i].split())
                which = f" in statement {i + 1} of {len(statements)} ({sql[:200]}{'...' if len(sql) > 200 else ''})"
            return ExecutionError(f"Spark failed{which}: {report.get('error')}\n(ran as {where})",
                                  remote_traceback=report.get("log_tail") or "")
        detail = self._failure_detail(run_id)
        if state == self.succeeded:
            return ExecutionError(f"{where} ended {state} but its driver wrote no report at {report_uri}; {detail}")
        if report:  # the driver reported success, then the step / job run failed
            return ExecutionError(f"{where} ended {state} after its driver reported success; {detail}")
        return ExecutionError(f"{where} ended {state} before the driver reported; {detail}")

    # -- S3: staging, reports, results -------------------------------------------------------
    def _driver(self) -> str:
        if self._driver_uri is None:
            body = resources.files("puffin.spark").joinpath("driver.py").read_bytes()
            uri = f"{self.staging}driver/{hashlib.sha256(body).hexdigest()[:16]}/driver.py"
            if not self._exists(uri):
                self._put(uri, body)
            self._driver_uri = uri
        return self._driver_uri

    def _stage_input(self, inp: SparkInput, base: str) -> str:
        if inp.path.startswith(("s3://", "s3a://")):
            return inp.path
        local = inp.path.removeprefix("file://")
        prefix = f"{base}inputs/{inp.name}/"
        if os.path.isfile(local):
            return self._upload(local, prefix + os.path.basename(local))
        if os.path.isdir(local):
            for d, _, files in os.walk(local):
                for f in sorted(files):
                    if not f.startswith((".", "_")):  # .crc, _SUCCESS: Spark skips them too
                        path = os.path.join(d, f)
                        self._upload(path, prefix + os.path.relpath(path, local).replace(os.sep, "/"))
            return prefix
        raise PuffinError(f"Spark input {inp.name!r}: {inp.path} is neither an s3:// URI nor a local file or directory")

    def _result(self, uri: str, columns: list[str] | None) -> pa.Table:
        bucket, _ = split_s3(uri)
        keys = sorted(k for k in self._list(uri) if not os.path.basename(k).startswith(("_", ".")))
        tables = [pq.read_table(io.BytesIO(self._s3(f"s3://{bucket}/{k}", lambda c, k=k: c.get_object(
            Bucket=bucket, Key=k)["Body"].read()))) for k in keys]
        if not tables:
            raise ExecutionError(f"the Spark job reported success but left no Parquet files under {uri}")
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        return table.rename_columns(columns) if columns else table

    def _put(self, uri: str, body: bytes) -> None:
        bucket, key = split_s3(uri)
        self._s3(uri, lambda c: c.put_object(Bucket=bucket, Key=key, Body=body))

    def _upload(self, path: str, uri: str) -> str:
        bucket, key = split_s3(uri)
        self._s3(uri, lambda c: c.upload_file(path, bucket, key))  # multipart when large
        return uri

    def _exists(self, uri: str) -> bool:
        bucket, key = split_s3(uri)
        return self._s3(uri, lambda c: c.head_object(Bucket=bucket, Key=key), missing_ok=True) is not None

    def _get_json(self, uri: str) -> dict | None:
        bucket, key = split_s3(uri)
        body = self._s3(uri, lambda c: c.get_object(Bucket=bucket, Key=key)["Body"].read(), missing_ok=True)
        return None if body is None else json.loads(body)

    def _list(self, uri: str) -> list[str]:
        bucket, prefix = split_s3(uri)
        return self._s3(uri, lambda c: [o["Key"] for page in c.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix) for o in page.get("Contents", [])])

    def _delete_prefix(self, uri: str) -> None:
        bucket, _ = split_s3(uri)
        keys = self._list(uri)
        for i in range(0, len(keys), 1000):
            batch = {"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True}
            self._s3(uri, lambda c, batch=batch: c.delete_objects(Bucket=bucket, Delete=batch))

    # -- boto3 ---------------------------------------------------------------------------------
    def _client(self, service: str):
        if service not in self._clients:
            import boto3
            from botocore.config import Config

            s3 = self.s3
            kwargs = {}
            if s3.access_key_id and s3.secret_access_key:
                kwargs = {"aws_access_key_id": s3.access_key_id.value,
                          "aws_secret_access_key": s3.secret_access_key.value,
                          "aws_session_token": s3.session_token.value if s3.session_token else None}
            session = boto3.session.Session(profile_name=s3.profile if not kwargs and s3.profile else None)
            endpoint, region = (s3.endpoint_url, s3.region) if service == "s3" else (self.settings.endpoint_url,
                                                                                   self.region)
            config = Config(retries={"mode": "standard", "total_max_attempts": s3.max_attempts},
                            connect_timeout=10, read_timeout=60)
            self._clients[service] = session.client(service, region_name=region, endpoint_url=endpoint,
                                                    config=config, **kwargs)
        return self._clients[service]

    def _call(self, op: str, **kwargs) -> dict:
        """One call of the EMR / EMR Serverless API; PuffinError naming the cause if AWS refuses."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._client(self.service), op)(**kwargs)
        except ClientError as e:
            raise self._api_error(e) from None
        except BotoCoreError as e:
            raise self._connection_error(e, self.target(), self.settings.endpoint_url) from None

    def _s3(self, uri: str, call: Callable, missing_ok: bool = False):
        """call(s3 client), about uri; None for a missing object when missing_ok."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call(self._client("s3"))
        except ClientError as e:
            if missing_ok and e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._s3_error(e, uri) from None
        except BotoCoreError as e:
            raise self._connection_error(e, uri, self.s3.endpoint_url) from None
        except Exception as e:  # noqa: BLE001 - upload_file wraps ClientError in S3UploadFailedError
            cause = e.__cause__ or e.__context__
            raise self._s3_error(cause if isinstance(cause, ClientError) else e, uri) from None

    def _api_error(self, e) -> PuffinError:
        code, message = _code_message(e, self.s3)
        op = getattr(e, "operation_name", "")
        if code in _NOT_FOUND or (code == "InvalidRequestException" and "not valid" in message):
            return PuffinError(f"{self.target()} was not found in region {self.region}: {message} "
                               "(check the id and the region)")
        if code in _DENIED:
            return PuffinError(f"access denied: {op} on {self.target()}: {message}; the credentials need "
                               f"{self.iam_prefix}:{op}")
        return PuffinError(f"{self.target()}: {op} failed ({code}: {message})")

    def _s3_error(self, e: Exception, uri: str) -> PuffinError:
        code, message = _code_message(e, self.s3)
        op = getattr(e, "operation_name", "S3 call")
        if code == "NoSuchBucket" or "NoSuchBucket" in message:
            return PuffinError(f"the staging bucket of {uri} does not exist ({self.s3.describe()}); create it or "
                               "point spark staging at one")
        if code in _DENIED or "AccessDenied" in message or "Forbidden" in message:
            return PuffinError(f"access denied: {op} on {uri}: {message}; the credentials need s3:GetObject, "
                               "s3:PutObject, s3:ListBucket and s3:DeleteObject on the staging prefix")
        return PuffinError(f"{op} on {uri} failed ({code or type(e).__name__}: {message})")

    @staticmethod
    def _connection_error(e, what: str, endpoint: str | None) -> PuffinError:
        name = type(e).__name__
        if name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
            return PuffinError(f"no AWS credentials for {what}: set AWS_PROFILE or AWS_ACCESS_KEY_ID/"
                               "AWS_SECRET_ACCESS_KEY, or run where an instance role applies")
        return PuffinError(f"cannot reach AWS for {what} (endpoint {endpoint or 'AWS'}): {name}: {e}")


def _code_message(e: Exception, s3: S3Config) -> tuple[str, str]:
    response = getattr(e, "response", None) or {}
    err = response.get("Error", {})
    code = str(err.get("Code", ""))
    message = str(err.get("Message") or "") or (str(e) if not response else code)
    return code, scrub(message, s3)


def _is_secret(key: str) -> bool:
    return any(w in key.lower() for w in _SECRET_WORDS)


class EmrStepsClient(_EmrClient):
    """Jobs as steps of a running EMR cluster (``settings.cluster_id``)."""

    service = "emr"
    iam_prefix = "elasticmapreduce"
    terminal = frozenset({"COMPLETED", "FAILED", "CANCELLED", "INTERRUPTED"})
    succeeded = "COMPLETED"
    log_uri: str | None = None

    def target(self) -> str:
        return f"EMR cluster {self.settings.cluster_id}"

    def describe(self, run_id: str) -> str:
        return f"EMR step {run_id} on cluster {self.settings.cluster_id}"

    def _check(self) -> None:
        cluster = self._call("describe_cluster", ClusterId=self.settings.cluster_id)["Cluster"]
        state = cluster.get("Status", {}).get("State", "")
        if state not in ("STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING"):
            raise PuffinError(f"{self.target()} is {state}: it takes no more steps; start a cluster and set "
                              "spark cluster_id to it")
        self.log_uri = cluster.get("LogUri")

    def step_args(self, driver_uri: str, job_uri: str) -> list[str]:
        return ["spark-submit", "--deploy-mode", "cluster", *self.settings.spark_submit_args,
                driver_uri, "--job", job_uri]

    def _submit(self, driver_uri: str, job_uri: str, job_id: str, timeout: float | None) -> str:
        step = {"Name": f"puffin {job_id}", "ActionOnFailure": "CONTINUE",
                "HadoopJarStep": {"Jar": "command-runner.jar", "Args": self.step_args(driver_uri, job_uri)}}
        return self._call("add_job_flow_steps", JobFlowId=self.settings.cluster_id, Steps=[step])["StepIds"][0]

    def _status(self, step_id: str) -> dict:
        return self._call("describe_step", ClusterId=self.settings.cluster_id, StepId=step_id)["Step"]["Status"]

    def _state(self, run_id: str) -> tuple[str, str]:
        status = self._status(run_id)
        return status["State"], (status.get("StateChangeReason") or {}).get("Message") or ""

    def _cancel(self, run_id: str) -> None:
        out = self._call("cancel_steps", ClusterId=self.settings.cluster_id, StepIds=[run_id],
                         StepCancellationOption="SEND_INTERRUPT")
        for info in out.get("CancelStepsInfoList", []):
            if info.get("Status") == "FAILED":
                log.warning("%s: EMR did not cancel it: %s", self.describe(run_id), info.get("Reason"))

    def _failure_detail(self, run_id: str) -> str:
        status = self._status(run_id)
        details = status.get("FailureDetails") or {}
        reason = "; ".join(str(details[k]) for k in ("Reason", "Message") if details.get(k))
        reason = reason or (status.get("StateChangeReason") or {}).get("Message") or "EMR gave no reason"
        logs = details.get("LogFile") or (f"{self.log_uri.rstrip('/')}/{self.settings.cluster_id}/steps/{run_id}/"
                                          if self.log_uri else None)
        return f"{reason}; step logs: {logs or 'the cluster has no LogUri (see the EMR console)'}"


class EmrServerlessClient(_EmrClient):
    """Jobs as job runs of an EMR Serverless Spark application (``settings.application_id``)."""

    service = "emr-serverless"
    iam_prefix = "emr-serverless"
    terminal = frozenset({"SUCCESS", "FAILED", "CANCELLED"})
    succeeded = "SUCCESS"

    def target(self) -> str:
        return f"EMR Serverless application {self.settings.application_id}"

    def describe(self, run_id: str) -> str:
        return f"EMR Serverless job run {run_id} of application {self.settings.application_id}"

    def _check(self) -> None:
        app = self._call("get_application", applicationId=self.settings.application_id)["application"]
        if app.get("state") == "TERMINATED":
            raise PuffinError(f"{self.target()} is TERMINATED: create another and set spark application_id to it")
        if str(app.get("type", "")).upper() != "SPARK":
            raise PuffinError(f"{self.target()} is a {app.get('type')} application; Puffin needs a Spark one")

    def submit_parameters(self) -> str:
        """spark_submit_args, then the conf (values with spaces, and secrets, stay in job.json only)."""
        params = list(self.settings.spark_submit_args)
        for k, v in self.conf.items():
            if not _is_secret(k) and v and not any(c.isspace() for c in k + v):
                params += ["--conf", f"{k}={v}"]
        return " ".join(params)

    def job_driver(self, driver_uri: str, job_uri: str) -> dict:
        submit = {"entryPoint": driver_uri, "entryPointArguments": ["--job", job_uri]}
        params = self.submit_parameters()
        if params:
            submit["sparkSubmitParameters"] = params
        return {"sparkSubmit": submit}

    def _submit(self, driver_uri: str, job_uri: str, job_id: str, timeout: float | None) -> str:
        kwargs = {
            "applicationId": self.settings.application_id,
            "executionRoleArn": self.settings.execution_role_arn,
            "name": f"puffin {job_id}",
            "jobDriver": self.job_driver(driver_uri, job_uri),
            "configurationOverrides": {
                "monitoringConfiguration": {"s3MonitoringConfiguration": {"logUri": f"{self.staging}logs/"}}},
        }
        if timeout is not None:  # EMR stops it even if this process is gone by then
            kwargs["executionTimeoutMinutes"] = max(5, math.ceil(timeout / 60) + 1)
        return self._call("start_job_run", **kwargs)["jobRunId"]

    def _job_run(self, run_id: str) -> dict:
        return self._call("get_job_run", applicationId=self.settings.application_id, jobRunId=run_id)["jobRun"]

    def _state(self, run_id: str) -> tuple[str, str]:
        run = self._job_run(run_id)
        return run["state"], run.get("stateDetails") or ""

    def _cancel(self, run_id: str) -> None:
        self._call("cancel_job_run", applicationId=self.settings.application_id, jobRunId=run_id)

    def _failure_detail(self, run_id: str) -> str:
        reason = self._job_run(run_id).get("stateDetails") or "EMR Serverless gave no reason"
        logs = f"{self.staging}logs/applications/{self.settings.application_id}/jobs/{run_id}/SPARK_DRIVER/"
        return f"{reason}; driver logs: {logs}"


__all__ = ["EmrServerlessClient", "EmrStepsClient"]
