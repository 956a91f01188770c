"""The runtime: the only module that imports Ray.

Each stage's fragments run as Ray tasks. A hash-partitioning task returns one object per
output partition (plus its metrics), and a consumer task receives exactly the objects it reads
as arguments, so data moves worker to worker through the object store and never through the
driver; only the final stage's single partition comes back. Tasks (not actors) are used so
Ray retries a fragment whose worker died and rebuilds lost outputs from lineage.
"""

from __future__ import annotations

import logging
import os
import signal
import traceback
from typing import Any

import pyarrow as pa
import ray
import ray.exceptions

from puffin.errors import ExecutionError, PuffinError, TransientError
from puffin.operators.fragment import Fragment, Metrics, run_fragment
from puffin.planner.physical import Stage

MAX_RETRIES = 3
KILL_ONCE_ENV = "PUFFIN_TEST_KILL_WORKER_ONCE"  # "<marker path>:<stage id>" (fault-injection tests)


def ensure_started(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the cluster in ``address`` / RAY_ADDRESS, or start a local Ray (the embedded default)."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address:
        ray.init(address=address, **kwargs)
    else:  # "local": start our own, never attach to a cluster that happens to run here
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **kwargs)


def shutdown() -> None:
    if ray.is_initialized():
        ray.shutdown()


def cluster_cpus() -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


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
            f"stage {fragment.stage_id} task {fragment.task} failed: {type(e).__name__}: {e}",
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

    def put_table(self, source_id: int, table: pa.Table) -> None:
        if source_id not in self._tables:
            self._tables[source_id] = ray.put(table)

    def run(self, stages: list[Stage], fragments: dict[int, list[Fragment]], analyze: bool = False,
            timeout: float | None = None):
        outputs: dict[int, list[list[ray.ObjectRef]]] = {}
        metric_refs: list[ray.ObjectRef] = []
        try:
            for stage in stages:
                outs = []
                for i, frag in enumerate(fragments[stage.id]):
                    args: list[Any] = [self._tables[r.source_id] for r in frag.scans if r.kind == "arrow"]
                    n_tables = len(args)
                    layout = []
                    for ex in stage.inputs:
                        pieces = _pieces(outputs[ex.stage_id], ex.mode, i)
                        layout.append(len(pieces))
                        args.extend(pieces)
                    n_out = _output_count(stage)
                    refs = _run.options(num_returns=n_out + 1, num_cpus=1).remote(frag, tuple(layout), n_tables, *args)
                    outs.append(refs[:-1])
                    metric_refs.append(refs[-1])
                outputs[stage.id] = outs
            result = ray.get(outputs[stages[-1].id][0][0])
            metrics: list[Metrics] = ray.get(metric_refs) if analyze else []
        except ray.exceptions.RayTaskError as err:
            cause = err.cause
            if isinstance(cause, PuffinError):
                raise cause from None
            raise ExecutionError(f"a fragment failed: {cause!r}", None, str(err)) from None
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.ObjectLostError) as err:
            raise TransientError(f"workers were lost beyond {MAX_RETRIES} retries: {err}") from err
        return result, metrics
