"""Typed failures of an offloaded fragment, and how a boto3/botocore error maps onto them.

``LambdaUnavailable`` means: run this fragment on Ray instead (the query still answers). Its
``reason`` says why (``throttled``, ``service`` (a 5xx of the Lambda service), ``transient`` (the
handler failed for a passing reason: an S3 read, a connection; see ``FunctionTransientError``),
``connection_lost``, ``timeout``, ``crashed``, ``function_error``, ``not_found``,
``access_denied``, ``wrong_region``, ``endpoint``, ``credentials``, ``payload_too_large``, ``result_lost``,
``bad_response``, ``unsupported`` (not a fragment Lambda can run: exchange inputs, in-memory
or local tables)); ``permanent`` ones (configuration: a missing function, a denied invoke, a
wrong region or endpoint, no credentials) will fail the same way for every fragment, so the
runtime should warn once and stop offloading for the query; ``retryable`` ones (``RETRYABLE``)
are worth invoking again after a backoff (``puffin.lambda_bridge.retry``) before Ray runs the
fragment. ``LambdaQueryError`` is a fragment DuckDB rejected on Lambda: it would fail on Ray
the same way.
"""

from __future__ import annotations

import json

from puffin.errors import ExecutionError, PuffinError, TransientError

PERMANENT = ("not_found", "access_denied", "wrong_region", "endpoint", "credentials")
# worth a retry: the same request may well succeed in a moment (timeouts and crashes are not:
# a fragment that ran out of time or memory would again, so Ray runs it at once)
RETRYABLE = ("throttled", "service", "transient", "connection_lost")
# the Lambda service's own failures (HTTP 5xx / 409 while a function is being updated)
SERVICE_CODES = ("ServiceException", "ResourceNotReadyException", "ResourceConflictException",
                 "EC2UnexpectedException", "ENINotReadyException", "SnapStartNotReadyException")
THROTTLE_CODES = ("TooManyRequestsException", "EC2ThrottledException", "Throttling", "ThrottlingException")


class FunctionTransientError(RuntimeError):
    """Raised by the handler for a failure that says nothing about the fragment (an S3 read or a
    connection broke): Lambda reports it as ``errorType`` ``FunctionTransientError`` and the
    invoker tries the fragment again instead of sending it to Ray at once."""


class LambdaUnavailable(TransientError):
    def __init__(self, reason: str, function: str, detail: str, retry_after: float | None = None):
        self.reason = reason
        self.function = function
        self.detail = detail
        self.retry_after = retry_after  # seconds the service asked to wait (a 429's Retry-After)
        self.attempts = 1  # invocations made before giving up (set by the invoker)
        self.retried: dict[str, int] = {}  # reason -> retries made for it
        super().__init__(f"Lambda function {function}: {reason.replace('_', ' ')}: {detail}")

    @property
    def permanent(self) -> bool:
        return self.reason in PERMANENT

    @property
    def retryable(self) -> bool:
        return self.reason in RETRYABLE

    def __reduce__(self):
        return (type(self), (self.reason, self.function, self.detail, self.retry_after))

    @property
    def setting(self) -> str:
        """The ``lambda_`` setting a permanent failure points at."""
        return {"not_found": "function", "access_denied": "function", "wrong_region": "region",
                "endpoint": "endpoint_url", "credentials": "function"}.get(self.reason, "offload")

    def setting_error(self) -> PuffinError:
        """For ``offload="always"``: the failure as an error naming the setting to fix."""
        hint = {"not_found": "no such function in this region (check 'function' and 'region')",
                "access_denied": "the caller may not invoke it (lambda:InvokeFunction)",
                "wrong_region": "the request was signed for another region than the endpoint's (check 'region')",
                "endpoint": "the Lambda endpoint cannot be reached (check 'endpoint_url' and 'region')",
                "credentials": "no AWS credentials were found for invoking it"}.get(self.reason, self.reason)
        return PuffinError(f"lambda setting '{self.setting}' with offload='always': function {self.function}: "
                           f"{hint}: {self.detail}")


class LambdaQueryError(ExecutionError):
    """DuckDB rejected the fragment's data or SQL on Lambda (the same error Ray would give)."""


def from_client_error(e, function: str) -> LambdaUnavailable:
    """A botocore ``ClientError`` (an HTTP error answer of the Invoke API)."""
    err = e.response.get("Error", {})
    code = err.get("Code", "")
    msg = err.get("Message", "") or str(e)
    meta = e.response.get("ResponseMetadata", {})
    status = meta.get("HTTPStatusCode", 0)
    if code in THROTTLE_CODES or status == 429:
        why = e.response.get("Reason") or err.get("Reason")
        return LambdaUnavailable("throttled", function, f"{code or 'HTTP 429'}: {msg}" + (f" ({why})" if why else ""),
                                 retry_after=_retry_after(meta.get("HTTPHeaders", {}).get("retry-after")))
    if code in SERVICE_CODES or (status >= 500 and code not in _CONFIG_5XX):
        return LambdaUnavailable("service", function, f"{code or f'HTTP {status}'}: {msg}")
    if code == "InvalidSignatureException" and "scoped to a valid region" in msg:
        return LambdaUnavailable("wrong_region", function, f"{code}: {msg}")
    if code == "ResourceNotFoundException":
        return LambdaUnavailable("not_found", function, f"{code}: {msg} (wrong name or region?)")
    if code in ("AccessDeniedException", "AccessDenied", "UnrecognizedClientException", "InvalidSignatureException",
                "ExpiredTokenException", "KMSAccessDeniedException"):
        return LambdaUnavailable("access_denied", function, f"{code}: {msg}")
    if code in ("RequestTooLargeException", "RequestEntityTooLargeException"):
        return LambdaUnavailable("payload_too_large", function, f"{code}: {msg}")
    return LambdaUnavailable("function_error", function, f"{code or 'HTTP error'}: {msg}")


# 5xx answers that are the function's configuration (VPC, KMS, image), not a passing failure
_CONFIG_5XX = ("InvalidSecurityGroupIDException", "InvalidSubnetIDException", "SubnetIPAddressLimitReachedException",
               "ENILimitReachedException", "EC2AccessDeniedException", "KMSAccessDeniedException",
               "KMSDisabledException", "KMSInvalidStateException", "KMSNotFoundException", "InvalidRuntimeException",
               "InvalidZipFileException")


def _retry_after(value) -> float | None:
    try:
        return max(0.0, float(value)) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def from_botocore_error(e, function: str, endpoint: str) -> LambdaUnavailable:
    """A botocore error without an HTTP answer: timeouts, unreachable endpoints, no credentials."""
    name = type(e).__name__
    if name in ("ReadTimeoutError",):
        return LambdaUnavailable("timeout", function, f"no answer within the read timeout ({e})")
    if name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
        return LambdaUnavailable("credentials", function, f"{name}: {e}")
    if name == "ConnectionClosedError":  # the endpoint answered before: a connection dropped under load
        return LambdaUnavailable("connection_lost", function, f"{name}: {e}")
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "SSLError",
                "ProxyConnectionError", "UnknownEndpointError", "InvalidRegionError"):
        return LambdaUnavailable("endpoint", function, f"cannot reach {endpoint} ({name}: {e})")
    return LambdaUnavailable("function_error", function, f"{name}: {e}")


def from_function_error(kind: str, body: bytes, function: str) -> LambdaUnavailable:
    """An answer with ``X-Amz-Function-Error``: the handler raised, crashed or timed out."""
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        doc = {"errorMessage": body[:500].decode(errors="replace")}
    etype = str(doc.get("errorType", kind))
    msg = str(doc.get("errorMessage", ""))
    text = f"{etype}: {msg}"
    if etype == "Sandbox.Timedout" or "timed out" in msg:
        return LambdaUnavailable("timeout", function, text)
    if etype.startswith("Runtime.") and ("Exit" in etype or "exited" in msg) or etype == "Runtime.OutOfMemory":
        return LambdaUnavailable("crashed", function, text)
    if "ResponseSizeTooLarge" in etype or "payload size exceeded" in msg:
        return LambdaUnavailable("payload_too_large", function, text)
    if etype == FunctionTransientError.__name__:
        return LambdaUnavailable("transient", function, text)
    return LambdaUnavailable("function_error", function, f"{kind}: {text}")
