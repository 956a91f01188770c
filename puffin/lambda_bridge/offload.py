"""A query's offload: which scan fragments go to Lambda, and how each one ran.

``decide`` is the policy for one query (``never | auto | always``, see ``LambdaSettings``): per
stage, which fragments go and why, as plain EXPLAIN prints it. ``QueryOffload`` is the record
one query keeps while it runs: it invokes the chosen fragments through the connection's
``Invoker`` (its threads, its concurrency budget, its retry policy), remembers each
invocation's ``InvokeInfo`` and each fallback with its reason and retries, warns once for a
configuration error (a missing function, a denied invoke, an unreachable endpoint), and gives
EXPLAIN ANALYZE its per-stage lines (starts, retries by reason, fallbacks, cache). The
runtime (Ray) and the session's in-process path (one-task plans) both use it. Neither Ray nor
boto3 is imported here.
"""

from __future__ import annotations

import threading
import uuid
import warnings
from concurrent.futures import Future
from dataclasses import dataclass

from puffin.lambda_bridge.errors import LambdaUnavailable
from puffin.lambda_bridge.routing import auto_offload, offloadable
from puffin.planner.explain import fmt_bytes


class LambdaFallbackWarning(UserWarning):
    """Offloading failed for a reason every fragment would meet (configuration): Ray ran them."""


@dataclass(frozen=True)
class StageDecision:
    tasks: frozenset[int]  # the stage's fragments (task numbers) that go to Lambda
    candidates: int  # how many of its fragments Lambda could run
    total: int
    why: str

    def line(self) -> str:
        if self.tasks:
            return f"Offload: {len(self.tasks)}/{self.total} fragments to Lambda ({self.why})"
        return f"Offload: none, on Ray ({self.why})"


def decide(settings, stages, fragments: dict[int, list], free_slots: int) -> dict[int, StageDecision]:
    """The offload decision for every stage that reads tables (stages reading only exchanges run
    on Ray and get none). ``auto`` weighs all of the query's offloadable fragments (its stages
    are submitted at once, so they compete for the same slots) against the free Ray slots."""
    candidates: dict[int, list[int]] = {}
    why_not: dict[int, str] = {}
    for st in stages:
        frs = fragments[st.id]
        if not any(f.scans for f in frs):
            continue
        ok_tasks = []
        for f in frs:
            ok, why = offloadable(f)
            if ok:
                ok_tasks.append(f.task)
            else:
                why_not.setdefault(st.id, why)
        candidates[st.id] = ok_tasks
    n = sum(len(t) for t in candidates.values())
    if settings.offload == "always":
        go, why = True, "offload=always"
    elif settings.offload == "auto":
        go, why = auto_offload(n, free_slots, settings.auto_factor)
        why = f"offload=auto: {why}"
    else:
        go, why = False, "offload=never"
    out = {}
    for st in stages:
        if st.id not in candidates:
            continue
        ok_tasks, total = candidates[st.id], len(fragments[st.id])
        if not ok_tasks:
            out[st.id] = StageDecision(frozenset(), 0, total, f"not offloadable: {why_not.get(st.id, '')}")
            continue
        reason = why if len(ok_tasks) == total else f"{why}; the others: {why_not[st.id]}"
        out[st.id] = StageDecision(frozenset(ok_tasks) if go else frozenset(), len(ok_tasks), total, reason)
    return out


class QueryOffload:
    """One query's offloaded fragments: invoke them, record how they ran, decide on failures."""

    Unavailable = LambdaUnavailable  # for the runtime, which does not import the bridge itself

    def __init__(self, invoker, decisions: dict[int, StageDecision], query_id: str | None = None):
        self.invoker = invoker
        self.settings = invoker.settings
        self.decisions = decisions
        self.query_id = query_id or f"q-{uuid.uuid4().hex[:20]}"
        self.ran: dict[tuple[int, int], object] = {}  # (stage, task) -> InvokeInfo
        self.fallbacks: dict[tuple[int, int], str] = {}  # (stage, task) -> reason
        self.fallback_retries: dict[tuple[int, int], dict[str, int]] = {}  # (stage, task) -> reason -> retries
        self.permanent: LambdaUnavailable | None = None
        self._stop = threading.Event()
        self._warned = False
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return any(d.tasks for d in self.decisions.values())

    def wants(self, fragment) -> bool:
        d = self.decisions.get(fragment.stage_id)
        return d is not None and fragment.task in d.tasks

    # -- invoking (the invoker's threads) ------------------------------------------------------
    def run(self, fragment, attempt: int = 0):
        """Invoke one fragment: ``(parts, metrics)``, or ``LambdaUnavailable`` (run it on Ray)."""
        with self._lock:
            earlier, stopped = self.permanent, self._stop.is_set()
        if earlier is not None:  # every fragment would meet it: do not invoke again
            raise LambdaUnavailable(earlier.reason, earlier.function, earlier.detail)
        if stopped:
            raise LambdaUnavailable("cancelled", "-", "the query ended first")
        try:
            parts, metrics, info = self.invoker.invoke(fragment, self.query_id, attempt, stop=self._stop)
        except LambdaUnavailable as e:
            if e.permanent:
                with self._lock:
                    self.permanent = self.permanent or e
            raise
        with self._lock:
            self.ran[(fragment.stage_id, fragment.task)] = info
        return parts, metrics

    def submit(self, fragment, attempt: int = 0) -> Future:
        return self.invoker.call_async(self.run, fragment, attempt)

    def stop(self) -> None:
        """The query is over (failed, cancelled): invocations not yet started do not start, and
        those backing off before a retry give up."""
        self._stop.set()

    # -- failures (the query's thread) ---------------------------------------------------------
    def fell_back(self, fragment, err: Exception):
        """Record that ``fragment`` runs on Ray instead because of ``err``. Returns the error the
        query must raise instead (``offload="always"`` and a configuration error), else None;
        the first configuration error of a query is warned about once."""
        if not isinstance(err, LambdaUnavailable):  # a bug of the bridge must not fail the query
            err = LambdaUnavailable("bridge_error", self.settings.function, f"{type(err).__name__}: {err}")
        attempts = getattr(err, "attempts", 1)
        with self._lock:
            self.fallbacks[(fragment.stage_id, fragment.task)] = (f"{err.reason}: {_short(err.detail, 120)}"
                                                                  + (f" [{attempts} attempts]" if attempts > 1 else ""))
            if getattr(err, "retried", None):
                self.fallback_retries[(fragment.stage_id, fragment.task)] = dict(err.retried)
            warn = err.permanent and not self._warned
            self._warned = self._warned or err.permanent
        if err.permanent and self.settings.offload == "always":
            return err.setting_error()
        if warn:
            warnings.warn(f"Lambda offload failed, the query's fragments run on Ray: function {err.function}: "
                          f"{err.reason.replace('_', ' ')}: {err.detail} (lambda setting '{err.setting}')",
                          LambdaFallbackWarning, stacklevel=2)
        return None

    def finish(self) -> None:
        """Delete the query's results on S3 (if any went there) without waiting for it."""
        if self.settings.results_url and (self.ran or self.fallbacks):
            try:
                self.invoker.call_async(self.invoker.cleanup, self.query_id)
            except RuntimeError:  # the pool is shut down (the connection closed)
                pass

    # -- EXPLAIN ANALYZE -----------------------------------------------------------------------
    def stage_lines(self, stage_id: int) -> list[str]:
        d = self.decisions.get(stage_id)
        if d is None:
            return []
        infos = [info for (s, _), info in sorted(self.ran.items()) if s == stage_id]
        falls = sorted((t, why) for (s, t), why in self.fallbacks.items() if s == stage_id)
        if not d.tasks:
            return [d.line()]
        on_ray = d.total - len(infos)
        names = sorted({f"{i.function}:{i.qualifier}" if i.qualifier else i.function for i in infos})
        head = f"Lambda: {len(infos)} of {d.total} fragments on {', '.join(names) or self.settings.function}, " \
               f"Ray: {on_ray} ({d.why})"
        lines = [head]
        retried: dict[str, int] = {}
        for r in [i.retried for i in infos] + [r for (s, _), r in self.fallback_retries.items() if s == stage_id]:
            for reason, n in r.items():
                retried[reason] = retried.get(reason, 0) + n
        retries = sum(retried.values())
        backoff = sum(i.backoff_ms for i in infos)
        why_retried = (" (" + " ".join(f"{k}={v}" for k, v in sorted(retried.items()))
                       + (f", backoff {backoff:.0f}ms" if infos and backoff else "") + ")") if retries else ""
        if infos:
            cold = sum(1 for i in infos if i.cold)
            hits, misses = sum(i.cache_hits for i in infos), sum(i.cache_misses for i in infos)
            hit_b, miss_b = sum(i.cache_hit_bytes for i in infos), sum(i.cache_miss_bytes for i in infos)
            bypassed = sum(i.cache_bypassed for i in infos)
            via_s3 = sum(1 for i in infos if i.via == "s3")
            replayed = sum(1 for i in infos if i.replayed)
            walls = [i.wall_ms for i in infos]
            inits = [i.init_ms for i in infos if i.init_ms]
            text = (f"  starts cold={cold} warm={len(infos) - cold}"
                    + (f" (init max={max(inits):.0f}ms)" if inits else "")
                    + f" retries={retries}{why_retried} fallbacks={len(falls)}"
                    f" | cache hits={hits} misses={misses} hit={fmt_bytes(hit_b)} missed={fmt_bytes(miss_b)}"
                    + (f" bypassed={bypassed}" if bypassed else "")
                    + f" | invoke total={sum(walls):.0f}ms max={max(walls):.0f}ms"
                    + (f" | via S3={via_s3}" if via_s3 else "")
                    + (f" replayed={replayed}" if replayed else ""))
            lines.append(text)
        elif falls:
            lines.append(f"  retries={retries}{why_retried} fallbacks={len(falls)}")
        for task, why in falls:
            lines.append(f"  fallback to Ray: task {task}: {why}")
        return lines

    def notes(self, stage_ids) -> dict[int, list[str]]:
        return {s: self.stage_lines(s) for s in stage_ids if s in self.decisions}


def plan_notes(decisions: dict[int, StageDecision]) -> dict[int, list[str]]:
    """Plain EXPLAIN's line per stage: the decision and why."""
    return {s: [d.line()] for s, d in decisions.items()}


def _short(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."
