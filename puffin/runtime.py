"""The runtime: the only module that imports Ray.

Each stage's fragments run as Ray tasks. A hash-partitioning task returns one object per
output partition (plus its metrics), and a consumer task receives exactly the objects it reads
as arguments, so data moves worker to worker through the object store and never through the
driver; only the final stage's single partition comes back. Tasks (not actors) are used so
Ray retries a fragment whose worker died and rebuilds lost outputs from lineage. A query that
fails, times out or is interrupted has all its tasks cancelled (``Executor.run``). Scan
fragments a query offloads to AWS Lambda (``puffin.lambda_bridge.offload``) are invoked from the
driver's threads and their outputs put into the object store, so the stages after them do not
change; a fragment Lambda cannot run becomes its normal task.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import traceback
from concurrent import futures
from concurrent.futures import Future
from typing import Any

import pyarrow as pa
import ray
import ray.exceptions

from puffin.errors import ExecutionError, PuffinError, QueryCancelled, TransientError
from puffin.operators.fragment import Fragment, Metrics, error_text, run_fragment
from puffin.planner.physical import Stage
from puffin.progress import Tracker

MAX_RETRIES = 3
KILL_ONCE_ENV = "PUFFIN_TEST_KILL_WORKER_ONCE"  # "<marker path>:<stage id>" (fault-injection tests)
POLL_S = 0.1  # the driver wakes this often while a query runs: Ctrl-C, timeout, a failed task
# A timeout or Ctrl-C ends a cancelled task's worker (DuckDB in native code ignores
# KeyboardInterrupt). After a failure the siblings are cancelled gently: force-cancelling tasks
# whose inputs are failing at that moment crashed the driver in Ray 2.60 ("Check failed: ...
# Tried to complete task that was not pending", task_manager.cc) within a few failed queries.
CANCEL_SETTLE_S = 10.0  # longest wait for a cancelled query's tasks to settle


def join(address: str) -> None:
    """Join the cluster at ``address`` as a driver (a named cluster, or the local head that
    ``puffin.launch`` started), unless this process is in one already."""
    if not ray.is_initialized():
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)


def describe_cluster() -> str:
    """One line saying which cluster this driver joined and its size (for a job's log)."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cpus = int(ray.cluster_resources().get("CPU", 0))
    return f"Ray cluster {ray.get_runtime_context().gcs_address}: {len(nodes)} node(s), {cpus} CPU(s)"


def start_head(num_cpus: int | None) -> str:
    """Start a local Ray head in this process (``puffin.launch``'s helper); its GCS address."""
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING,
             log_to_driver=False)
    return ray.get_runtime_context().gcs_address


def reload_config() -> None:
    """Make Ray read its settings from the environment again (RAY_AUTH_MODE set after import)."""
    from ray._raylet import Config

    Config.initialize("")


@ray.remote(num_cpus=1)
def _warm() -> int:
    """Nothing but what every fragment needs first: this module's imports and the database."""
    from puffin.operators.fragment import database

    database()
    return os.getpid()


def warm_workers() -> None:
    """One warm-up task per CPU, so the first query's tasks find workers ready to run DuckDB.
    Called by the thread that started Ray (``puffin.launch``); waits for them."""
    try:
        ray.get([_warm.remote() for _ in range(cluster_cpus())], timeout=120)
    except Exception:
        logging.getLogger(__name__).debug("warming Ray's workers failed", exc_info=True)


def is_started() -> bool:
    return ray.is_initialized()


def cluster_cpus() -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def node_count() -> int:
    """The cluster's live nodes that can run tasks."""
    return max(1, sum(1 for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU")))


def largest_node_cpus() -> int:
    return max([int(n["Resources"]["CPU"]) for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU")]
               or [1])


def free_cpus() -> int:
    """CPUs no task holds now (the ``auto`` offload policy's free Ray slots)."""
    return max(0, int(ray.available_resources().get("CPU", 0)))


def memory_per_cpu() -> int | None:
    res = ray.cluster_resources()
    mem, cpus = res.get("memory"), res.get("CPU")
    return int(mem * 0.8 / cpus) if mem and cpus else None


def _maybe_die(fragment: Fragment) -> None:
    spec = os.environ.get(KILL_ONCE_ENV)
    if not spec:
        return
    marker, _, stage = spec.rpartition(":")
    if int(stage) == fragment.stage_id and fragment.task == 0 and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)


@ray.remote(max_retries=MAX_RETRIES)
def _run(fragment: Fragment, layout: tuple[int, ...], n_tables: int, *args: Any):
    _maybe_die(fragment)
    tables = {}
    for read, table in zip([r for r in fragment.scans if r.kind == "arrow"], args[:n_tables]):
        tables[read.source_id] = table
    inputs, pos = {}, n_tables
    for name, count in zip(fragment.inputs, layout):
        inputs[name] = list(args[pos : pos + count])
        pos += count
    try:
        parts, metrics = run_fragment(fragment, inputs, tables)
    except Exception as e:  # noqa: BLE001 - any failure of a fragment: name the stage, keep the cause
        raise ExecutionError(
            f"stage {fragment.stage_id} task {fragment.task} failed: {error_text(e)}",
            fragment.stage_id,
            traceback.format_exc(),
        ) from None
    return (*parts, metrics)


def _pieces(upstream: list[list[ray.ObjectRef]], mode: str, task: int) -> list[ray.ObjectRef]:
    """The upstream objects task ``task`` of the consuming stage reads."""
    if mode in ("hash", "range"):
        return [u[task] for u in upstream]  # partition `task` of every upstream task
    if mode == "forward":
        return [upstream[task][0]]  # one-to-one
    if mode == "sample":
        return [u[1] for u in upstream]
    return [u[0] for u in upstream]  # broadcast / gather: everything


def _output_count(stage: Stage) -> int:
    if stage.output.mode in ("hash", "range"):
        return stage.output.partitions
    return 2 if stage.output.mode == "sampled" else 1


class Executor:
    """Submits every stage's tasks at once; Ray starts each when its inputs exist."""

    def __init__(self) -> None:
        self._tables: dict[int, ray.ObjectRef] = {}
        self._node_cpus = largest_node_cpus()  # a task reserves the cores its DuckDB uses, up to a node's

    def put_table(self, source_id: int, table: pa.Table) -> None:
        if source_id not in self._tables:
            self._tables[source_id] = ray.put(table)

    def run(self, stages: list[Stage], fragments: dict[int, list[Fragment]], analyze: bool = False,
            timeout: float | None = None, offload=None, progress=None):
        """Run the stages' fragments; return the final table and (``analyze``) every task's metrics.

        The driver waits in short slices, so a failed task, ``timeout`` seconds passing (counted
        from the first submission) or a KeyboardInterrupt is seen at once. Then every task of the
        query is cancelled (a running one by ending its worker process, the only way to stop
        DuckDB inside native code), its CPU is free for the next query, and every errored object
        is consumed so Ray prints no "Unhandled error" for it later. A timeout raises
        ``QueryCancelled``; a KeyboardInterrupt is re-raised as it is (Python's convention: Ctrl-C
        stops the program unless the caller chose to catch it); a failed fragment raises
        ``ExecutionError`` (or the ``PuffinError`` it raised), lost workers ``TransientError``.

        ``offload`` (a ``puffin.lambda_bridge.offload.QueryOffload``) names the scan fragments
        that run on AWS Lambda: they are invoked first, on the invoker's threads; each one's
        partitions enter the object store (``ray.put``) as it answers, so the stages reading them
        are submitted once their inputs exist and receive them as they would a task's outputs.
        Stages not waiting on Lambda are submitted at once, as always. A fragment Lambda cannot
        run (``LambdaUnavailable``) runs as its Ray task instead.

        ``progress`` (a callback) gets a ``puffin.progress.Progress`` each time the driver wakes.
        """
        if timeout is not None and timeout <= 0:
            raise PuffinError(f"timeout must be a positive number of seconds, not {timeout!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        outputs: dict[int, list[list[ray.ObjectRef] | None]] = {}
        metric_refs: list[ray.ObjectRef] = []
        direct: list[Metrics] = []  # metrics of the fragments Lambda ran
        tasks: list[list[ray.ObjectRef]] = []  # every task's return objects, to cancel and drain
        invocations: dict[Future, tuple[Stage, int, Fragment]] = {}
        tracker = Tracker(progress, stages)

        def submit(stage: Stage, i: int, frag: Fragment) -> list[ray.ObjectRef]:
            args: list[Any] = [self._tables[r.source_id] for r in frag.scans if r.kind == "arrow"]
            n_tables = len(args)
            layout = []
            for ex in stage.inputs:
                pieces = _pieces(outputs[ex.stage_id], ex.mode, i)
                layout.append(len(pieces))
                args.extend(pieces)
            n_out = _output_count(stage)
            cpus = max(1, min(frag.threads, self._node_cpus))
            refs = _run.options(num_returns=n_out + 1, num_cpus=cpus).remote(frag, tuple(layout), n_tables, *args)
            tasks.append(refs)
            metric_refs.append(refs[-1])
            return refs[:-1]

        try:
            if offload is not None:
                for stage in stages:
                    for i, frag in enumerate(fragments[stage.id]):
                        if offload.wants(frag):
                            invocations[offload.submit(frag)] = (stage, i, frag)
            offloaded = {(s.id, i) for s, i, _ in invocations.values()}
            pending = list(stages)
            while True:
                waiting = []
                for stage in pending:  # in order: a stage's inputs come before it
                    if any(outputs.get(ex.stage_id) is None or any(o is None for o in outputs[ex.stage_id])
                           for ex in stage.inputs):
                        waiting.append(stage)  # an input is still on Lambda
                        continue
                    outputs[stage.id] = [None if (stage.id, i) in offloaded else submit(stage, i, frag)
                                         for i, frag in enumerate(fragments[stage.id])]
                pending = waiting
                if not invocations:
                    break
                tracker.tick()
                for fut in _await_invocations(invocations, deadline):
                    stage, i, frag = invocations.pop(fut)
                    try:
                        parts, m = fut.result()
                    except offload.Unavailable as e:  # on Ray instead (or the setting's error)
                        instead = offload.fell_back(frag, e)
                        if instead is not None:
                            raise instead from None
                        outputs[stage.id][i] = submit(stage, i, frag)
                    except PuffinError:  # LambdaQueryError: DuckDB rejected it; Ray would too
                        raise
                    except Exception as e:  # noqa: BLE001 - the bridge's own bug: Ray runs it
                        offload.fell_back(frag, e)
                        outputs[stage.id][i] = submit(stage, i, frag)
                    else:
                        outputs[stage.id][i] = [ray.put(p) for p in parts]
                        direct.append(m)
                        tracker.finished([m])
            metrics = direct + _await(metric_refs, deadline, tracker)
            last = outputs[stages[-1].id]  # one task, or a write's tasks (each says what it wrote)
            result = ray.get(last[0][0]) if len(last) == 1 else pa.concat_tables(ray.get([o[0] for o in last]))
            tracker.tick(final=True)
        except _TimedOut:
            _abandon(tasks, force=True)
            raise QueryCancelled(f"the query ran past its timeout of {timeout:g} s and was cancelled") from None
        except ray.exceptions.RayTaskError as err:
            _abandon(tasks)
            cause = err.cause
            if isinstance(cause, PuffinError):
                raise cause from None
            raise ExecutionError(f"a fragment failed: {cause!r}", None, str(err)) from None
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.ObjectLostError) as err:
            _abandon(tasks)
            raise TransientError(f"workers were lost beyond {MAX_RETRIES} retries: {err}") from err
        except BaseException:  # KeyboardInterrupt (re-raised as it is) or anything unexpected
            _abandon(tasks, force=True)
            raise
        finally:
            if offload is not None:
                offload.stop()
                for fut in invocations:
                    fut.cancel()
                offload.finish()
        return result, metrics if analyze else []


def _await_invocations(invocations: dict[Future, Any], deadline: float | None) -> set[Future]:
    """The Lambda invocations done now, waiting at most ``POLL_S`` (the deadline, Ctrl-C)."""
    wait = POLL_S
    if deadline is not None:
        wait = min(wait, deadline - time.monotonic())
        if wait <= 0:
            raise _TimedOut
    done, _ = futures.wait(list(invocations), timeout=wait, return_when=futures.FIRST_COMPLETED)
    return done


class _TimedOut(Exception):
    pass


def _await(metric_refs: list[ray.ObjectRef], deadline: float | None, tracker: Tracker) -> list[Metrics]:
    """Every task's metrics, i.e. wait for every task to finish, waking every ``POLL_S``.

    A task's metrics object is tiny and ready exactly when the task is done, so fetching each
    as it comes raises a failed task's error at once (not only when it reaches the final
    stage), and no data passes through the driver. Waking lets Python deliver a
    KeyboardInterrupt and lets the deadline pass.
    """
    pending, done = list(metric_refs), []
    while pending:
        wait = POLL_S
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
            if wait <= 0:
                raise _TimedOut
        ready, pending = ray.wait(pending, num_returns=len(pending), timeout=wait)
        if ready:
            got = ray.get(ready)
            done.extend(got)
            tracker.finished(got)
        tracker.tick()
    return done


def _abandon(tasks: list[list[ray.ObjectRef]], force: bool = False) -> None:
    """Cancel every task of a query that will not finish (``force``: a timeout or Ctrl-C), and
    drain what they return. After a failure nothing is cancelled: the failure reaches the
    consumers through their inputs and the siblings finish their share (cancelling tasks whose
    inputs are failing at that moment crashed the driver in Ray 2.60, "Check failed: ... Tried
    to complete task that was not pending"); the query's objects are only drained.

    ``force=True`` ends the worker process of a task still running: ``force=False`` only raises
    KeyboardInterrupt in the task's Python code, which DuckDB executing a statement in native
    code does not see (measured: the CPU stayed busy until the statement ended). Tasks not yet
    started are dropped and finished ones are left alone. Cancelled tasks are not retried. The
    next task then starts a fresh worker process (about a second, once).

    Ray prints "Unhandled error" for a task's error object freed without having been read (a
    sibling that failed too, a consumer that failed on its input). Waiting on an object reads
    it, so the query's objects are waited on (not fetched) until all have settled; the
    cancelled ones settle as TaskCancelledError, which Ray does not report.
    """
    if force:  # consumers first, so none is still waiting on a producer being ended
        for refs in reversed(tasks):
            ray.cancel(refs[0], force=True, recursive=True)  # a finished task: nothing happens
    every = [r for refs in tasks for r in refs]
    if every:
        ray.wait(every, num_returns=len(every), timeout=CANCEL_SETTLE_S, fetch_local=False)
