"""A local stand-in for Amazon EMR: moto's server, plus a runner that does what EMR does with
the steps and job runs submitted to it -- run them with spark-submit -- on local Spark.

    python tests/spark/emr_harness.py --work DIR --jars A.jar:B.jar
    -> prints "listening on http://127.0.0.1:PORT", serves until stdin closes

moto (5.2.5) answers the EMR, EMR Serverless and S3 APIs but runs nothing: a step stays RUNNING
for ever and a job run is SUCCESS the moment it starts, and neither has a state-manager
transition (``/moto-api/state-manager`` knows other services only). So this process runs moto's
server itself (``ThreadedMotoServer``, the app ``moto_server`` serves) and plays EMR on moto's
own backend objects:

- EMR: a step of a cluster (in order, one at a time, as EMR's default step concurrency) goes
  RUNNING, its ``command-runner.jar`` arguments (``spark-submit ... <s3 script> --job <s3 job>``)
  run on local Spark, and it ends COMPLETED or FAILED (with ``FailureDetails``: reason, the last
  error lines of spark-submit's output, and the log file uploaded under the cluster's ``LogUri``). moto lacks
  ``CancelSteps``: it is added here, as EMR documents it (a PENDING or RUNNING step becomes
  CANCELLED and its spark-submit is killed).
- EMR Serverless: a job run starts SUBMITTED (moto's default state is switched from SUCCESS),
  goes RUNNING, runs ``spark-submit <sparkSubmitParameters> <entryPoint> <entryPointArguments>``
  and ends SUCCESS or FAILED (``stateDetails``, driver stderr under the monitoring logUri).
  moto's own ``CancelJobRun`` sets CANCELLED; the runner then kills the spark-submit.
- A cluster or application tagged ``puffin-harness=hold`` runs nothing: its steps and job runs
  stay where moto put them (for timeout tests).

What differs from EMR, and why: the spark-submit is local (``--deploy-mode cluster`` becomes
``client``: a local master has no cluster mode), the cluster's ``spark-defaults.conf`` is this
harness's (``local[1]``, the Iceberg runtime and SQLite JDBC jars on the class path, UI off), and
local Spark has no ``s3://`` file system (no hadoop-aws here), so the harness does what EMRFS
would: it downloads the script and the job file, mirrors the job's ``s3://`` inputs to local
files and points ``result`` at a local directory that it uploads to the job's ``s3://`` result
when Spark is done. The driver script, its statements, its Spark conf and the report it writes
to S3 (through boto3, at this server's endpoint) are the submitted ones.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback

import boto3
from moto.core.utils import utcnow
from moto.emr import models as emr_models
from moto.emr import responses as emr_responses
from moto.emrserverless import models as serverless_models
from moto.server import ThreadedMotoServer

from puffin.spark.conf import local_conf

HOLD_TAG = ("puffin-harness", "hold")
SPARK_SUBMIT = os.path.join(os.path.dirname(sys.executable), "spark-submit")
# spark-submit options that take no value (every other --option takes one)
FLAGS = {"--verbose", "-v", "--supervise", "--help", "-h", "--version"}


def log(msg: str) -> None:
    print(f"[emr-harness {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- moto: what EMR has and moto 5.2.5 lacks ------------------------------------------------------
def _cancel_steps(self) -> emr_responses.ActionResult:
    cluster = self.backend.describe_cluster(self._get_param("ClusterId"))
    infos = []
    for step_id in self._get_param("StepIds", []):
        step = next((s for s in cluster.steps if s.id == step_id), None)
        if step is None or step.state not in ("PENDING", "RUNNING"):
            infos.append({"StepId": step_id, "Status": "FAILED",
                          "Reason": f"step is {step.state if step else 'unknown'}; only PENDING or RUNNING steps cancel"})
            continue
        step.state, step.end_date_time = "CANCELLED", utcnow()
        step.last_state_change_reason = "Cancelled by CancelSteps"
        infos.append({"StepId": step_id, "Status": "SUBMITTED"})
    return emr_responses.ActionResult({"CancelStepsInfoList": infos})


_moto_step_status = emr_models.Step.status


def _step_status(self) -> dict:
    status = _moto_step_status.fget(self)
    if getattr(self, "failure_details", None):
        status["FailureDetails"] = self.failure_details
    return status


def patch_moto() -> None:
    emr_responses.ElasticMapReduceResponse.cancel_steps = _cancel_steps
    emr_models.Step.status = property(_step_status)
    serverless_models.JOB_STATUS = "SUBMITTED"  # JobRun.__init__ reads it: runs start SUBMITTED


# -- the runner ---------------------------------------------------------------------------------
class Runner:
    def __init__(self, endpoint: str, work: str, jars: str):
        self.endpoint, self.work = endpoint, work
        self.s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                               aws_access_key_id="testing", aws_secret_access_key="testing")
        self.seen: set[str] = set()
        self.proc: subprocess.Popen | None = None  # the spark-submit running now
        conf_dir = os.path.join(work, "spark-conf")  # the "cluster's" /etc/spark/conf
        os.makedirs(conf_dir, exist_ok=True)
        defaults = {
            **local_conf("local[1]", "768m", jars),
            "spark.sql.shuffle.partitions": "1",
            "spark.default.parallelism": "1",
            "spark.local.dir": os.path.join(work, "spark-local"),
            "spark.sql.warehouse.dir": os.path.join(work, "spark-warehouse"),
            # C1 only and the serial GC: a short-lived JVM on a busy 2-core machine starts in about
            # half the time (8 s vs 16-23 s for an empty job, measured here)
            "spark.driver.extraJavaOptions": f"-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Djava.io.tmpdir={work}",
        }
        with open(os.path.join(conf_dir, "spark-defaults.conf"), "w") as f:
            f.writelines(f"{k} {v}\n" for k, v in defaults.items())
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SPARK_", "PYSPARK_"))}
        self.env.update({
            "SPARK_CONF_DIR": conf_dir, "SPARK_LOCAL_IP": "127.0.0.1",
            "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
            # what the instance role and region are on EMR: the driver's boto3 reaches this server
            "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
        })

    def loop(self) -> None:
        while True:
            try:
                if not self._step_once() and not self._job_run_once():
                    time.sleep(0.1)
            except Exception:  # noqa: BLE001 - keep serving; the test sees the state and the log
                log(traceback.format_exc())
                time.sleep(0.5)

    # EMR steps
    def _step_once(self) -> bool:
        for backend in _backends(emr_models.emr_backends):
            for cluster in list(backend.clusters.values()):
                if cluster._tags.get(HOLD_TAG[0]) == HOLD_TAG[1]:
                    continue
                step = next((s for s in cluster.steps if s.state in ("PENDING", "RUNNING")), None)
                if step is not None and step.id not in self.seen:
                    self.seen.add(step.id)
                    self._run_step(cluster, step)
                    return True
        return False

    def _run_step(self, cluster, step) -> None:
        step.state, step.start_date_time = "RUNNING", utcnow()
        args = list(step.args)
        if step.jar != "command-runner.jar" or not args or args[0] != "spark-submit":
            return self._end_step(cluster, step, 1, f"harness runs command-runner.jar spark-submit only: {args}")
        rc, out = self.spark_submit(step.id, args[1:], lambda: step.state == "CANCELLED")
        if step.state == "CANCELLED":
            return None
        logs = None
        if rc != 0 and cluster.log_uri:
            logs = f"{cluster.log_uri.rstrip('/')}/{cluster.id}/steps/{step.id}/stderr.gz"
            self._put(logs, gzip.compress(out.encode()))
        self._end_step(cluster, step, rc, out, logs)

    def _end_step(self, cluster, step, rc: int, out: str, logs: str | None = None) -> None:
        step.end_date_time = utcnow()
        if rc == 0:
            step.state = "COMPLETED"
        else:
            step.state = "FAILED"
            step.failure_details = {"Reason": f"spark-submit exited with status {rc}", "Message": _errors(out)}
            if logs:
                step.failure_details["LogFile"] = logs
        if not any(s.state in ("PENDING", "RUNNING") for s in cluster.steps):
            cluster.state = "WAITING"
        log(f"step {step.id}: {step.state}")

    # EMR Serverless job runs
    def _job_run_once(self) -> bool:
        for backend in _backends(serverless_models.emrserverless_backends):
            for app_id, runs in list(backend.job_runs.items()):
                app = backend.applications.get(app_id)
                if app is None or app.tags.get(HOLD_TAG[0]) == HOLD_TAG[1]:
                    continue
                run = next((r for r in runs if r.state == "SUBMITTED" and r.id not in self.seen), None)
                if run is not None:
                    self.seen.add(run.id)
                    self._run_job_run(run)
                    return True
        return False

    def _run_job_run(self, run) -> None:
        run.state, run.updated_at = "RUNNING", utcnow()
        submit = (run.job_driver or {}).get("sparkSubmit", {})
        args = [*(submit.get("sparkSubmitParameters") or "").split(), submit["entryPoint"],
                *submit.get("entryPointArguments", [])]
        started = time.monotonic()
        rc, out = self.spark_submit(run.id, args, lambda: run.state == "CANCELLED")
        if run.state == "CANCELLED":
            return
        run.total_execution_duration_seconds = int(time.monotonic() - started)
        log_uri = (((run.configuration_overrides or {}).get("monitoringConfiguration") or {})
                   .get("s3MonitoringConfiguration") or {}).get("logUri")
        if log_uri:
            self._put(f"{log_uri.rstrip('/')}/applications/{run.application_id}/jobs/{run.id}/SPARK_DRIVER/stderr.gz",
                      gzip.compress(out.encode()))
        run.state = "SUCCESS" if rc == 0 else "FAILED"
        if rc:
            run.state_details = f"Job failed, please check complete logs in configured logging destination. " \
                                f"ExitCode: {rc}. Last few exceptions: {_errors(out)}"
        run.updated_at = utcnow()
        log(f"job run {run.id}: {run.state}")

    # spark-submit, as EMR would run it
    def spark_submit(self, run_id: str, args: list[str], cancelled) -> tuple[int, str]:
        work = os.path.join(self.work, run_id)
        os.makedirs(work, exist_ok=True)
        opts, i = [], 0
        while i < len(args) and args[i].startswith("-"):
            if args[i] in FLAGS:
                opts.append(args[i])
                i += 1
            else:
                value = "client" if args[i] == "--deploy-mode" else args[i + 1]
                opts += [args[i], value]
                i += 2
        if i >= len(args):
            return 1, f"no application script in spark-submit arguments {args}"
        script, app_args = self._fetch(args[i], work), args[i + 1:]
        if "--job" in app_args:
            j = app_args.index("--job") + 1
            app_args[j], upload = self._localize_job(app_args[j], work)
        else:
            upload = None
        cmd = [SPARK_SUBMIT, *opts, script, *app_args]
        log(f"{run_id}: {' '.join(cmd)}")
        with open(os.path.join(work, "output.log"), "w+") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=work, env=self.env,
                                    start_new_session=True)
            self.proc = proc
            while proc.poll() is None:
                if cancelled():
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    log(f"{run_id}: cancelled, spark-submit killed")
                    break
                time.sleep(0.2)
            self.proc = None
            out.seek(0)
            text = out.read()
        if proc.returncode == 0 and upload:
            self._upload_dir(*upload)
        return proc.returncode, text

    def _localize_job(self, job_uri: str, work: str) -> tuple[str, tuple[str, str] | None]:
        """The job with its s3:// data paths mirrored locally (what EMRFS gives Spark on EMR)."""
        job = json.loads(self._get(job_uri))
        for inp in job.get("inputs") or []:
            if inp["path"].startswith("s3://"):
                inp["path"] = "file://" + self._mirror(inp["path"], os.path.join(work, "s3"))
        upload = None
        if (job.get("result") or "").startswith("s3://"):
            local = os.path.join(work, "result")
            upload = (local, job["result"])
            job["result"] = "file://" + local
        path = os.path.join(work, "job.json")
        with open(path, "w") as f:
            json.dump(job, f)
        return path, upload

    def _fetch(self, uri: str, work: str) -> str:
        if not uri.startswith("s3://"):
            return uri
        path = os.path.join(work, os.path.basename(uri))
        with open(path, "wb") as f:
            f.write(self._get(uri))
        return path

    def _mirror(self, uri: str, root: str) -> str:
        bucket, key = uri[5:].split("/", 1)
        keys = [o["Key"] for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
                for o in page.get("Contents", [])]
        for k in keys:
            local = os.path.join(root, bucket, k)
            os.makedirs(os.path.dirname(local), exist_ok=True)
            self.s3.download_file(bucket, k, local)
        return os.path.join(root, bucket, key)

    def _upload_dir(self, local: str, uri: str) -> None:
        bucket, prefix = uri[5:].split("/", 1)
        for d, _, files in os.walk(local):
            for f in files:
                if not f.endswith(".crc"):
                    rel = os.path.relpath(os.path.join(d, f), local)
                    self.s3.upload_file(os.path.join(d, f), bucket, prefix.rstrip("/") + "/" + rel)

    def _get(self, uri: str) -> bytes:
        bucket, key = uri[5:].split("/", 1)
        return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()

    def _put(self, uri: str, body: bytes) -> None:
        bucket, key = uri.split("://", 1)[1].split("/", 1)
        self.s3.put_object(Bucket=bucket, Key=key, Body=body)


def _backends(backend_dict) -> list:
    return [b for regions in list(backend_dict.values()) for b in list(regions.values())]


def _errors(text: str, n: int = 3) -> str:
    """The last few error lines of spark-submit's output (else its last lines), as EMR shows them."""
    lines = [ln.strip() for ln in text.splitlines()]
    errors = [ln for ln in lines if ln.startswith("Error") or "Exception" in ln.split(":", 1)[0]]
    return "\n".join((errors or lines)[-n:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--work", required=True, help="scratch directory (Spark runs, mirrored S3 objects)")
    parser.add_argument("--jars", required=True, help="the cluster's extra class path (os.pathsep-separated)")
    args = parser.parse_args()
    patch_moto()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    runner = Runner(endpoint, args.work, args.jars)
    threading.Thread(target=runner.loop, daemon=True, name="emr-runner").start()
    print(f"listening on {endpoint}", flush=True)
    sys.stdin.read()  # until the test (or its process) goes away
    proc = runner.proc
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    shutil.rmtree(os.path.join(args.work, "spark-local"), ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
