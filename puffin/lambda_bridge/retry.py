"""The invoker's retry policy: which failures are invoked again, how often, after how long.

botocore's own retries are off (``total_max_attempts=1``): its standard mode also retries read
timeouts (a second wait of the whole function timeout) and unreachable endpoints, shares one
retry quota per client (a burst of throttles across a thousand-fragment fan-out drains it, and
then it stops retrying without a word), and reports only a count. Here, instead:

- retried: ``LambdaUnavailable.retryable`` reasons: ``throttled`` (429
  ``TooManyRequestsException``, ``EC2ThrottledException``), ``service`` (5xx ``ServiceException``,
  a function being updated), ``transient`` (the handler raised ``FunctionTransientError``: an S3
  read or a connection broke) and ``connection_lost``;
- not retried: timeouts, crashes, other function errors, payload limits (Ray runs the fragment
  at once), and configuration errors (they fail the same way every time);
- at most ``max_attempts`` invocations per fragment, the first included;
- waits with full jitter (``uniform(0, min(max_backoff, backoff * 2**retry))``, the AWS
  Architecture Blog's "Exponential Backoff And Jitter"), never less than a 429's ``Retry-After``;
  when that asks for more than ``max_backoff`` the fragment goes to Ray at once instead;
- the wait holds no concurrency slot: a backing-off fragment does not keep another from being
  invoked, and a retry waits for a free slot like a first attempt;
- a query that ends (cancelled, failed, timed out) interrupts the wait.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

from puffin.lambda_bridge.errors import LambdaUnavailable


@dataclass
class RetryPolicy:
    max_attempts: int = 3
    backoff: float = 0.1  # seconds, the first wait's upper bound
    max_backoff: float = 2.0  # seconds, the cap of any one wait
    rng: random.Random = field(default_factory=random.Random, repr=False)

    @classmethod
    def from_settings(cls, settings) -> RetryPolicy:
        return cls(settings.max_attempts, settings.backoff, settings.max_backoff)

    def delay(self, err: LambdaUnavailable, retry: int) -> float | None:
        """Seconds to wait before retry number ``retry`` (0-based) after ``err``; None: give up."""
        if not err.retryable or retry + 1 >= self.max_attempts:
            return None
        if err.retry_after is not None and err.retry_after > self.max_backoff:
            return None
        wait = self.rng.uniform(0, min(self.max_backoff, self.backoff * (2 ** retry)))
        return max(wait, err.retry_after or 0.0)


@dataclass
class Attempts:
    """How the retries of one invocation went (for ``InvokeInfo`` and EXPLAIN ANALYZE)."""

    retried: dict[str, int] = field(default_factory=dict)  # reason -> retries
    backoff_s: float = 0.0

    @property
    def retries(self) -> int:
        return sum(self.retried.values())


def run_with_retries(policy: RetryPolicy, attempt, attempts: Attempts, stop: threading.Event | None = None,
                     before_retry=None):
    """``attempt()`` until it returns, or raises a ``LambdaUnavailable`` the policy gives up on
    (re-raised with ``.attempts`` and ``.retried`` set). ``before_retry(err)`` runs before each
    new attempt (to forget a failed attempt's completion marker); ``stop`` set ends a wait early
    with a ``cancelled`` ``LambdaUnavailable``."""
    retry = 0
    while True:
        try:
            return attempt()
        except LambdaUnavailable as err:
            wait = policy.delay(err, retry)
            if wait is None:
                err.attempts, err.retried = retry + 1, dict(attempts.retried)
                if err.retryable and err.retry_after is not None and err.retry_after > policy.max_backoff:
                    err.detail += f" (asked to retry after {err.retry_after:g}s, over max_backoff)"
                raise
            attempts.retried[err.reason] = attempts.retried.get(err.reason, 0) + 1
            attempts.backoff_s += wait
            if stop is not None:
                if stop.wait(wait):
                    raise LambdaUnavailable("cancelled", err.function, "the query ended during a retry's "
                                            f"backoff (after {err.reason})") from None
            else:
                time.sleep(wait)
            if before_retry is not None:
                before_retry(err)
            retry += 1
