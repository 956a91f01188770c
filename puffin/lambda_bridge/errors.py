"""Typed failures of an offloaded fragment, and how a boto3/botocore error maps onto them.

``LambdaUnavailable`` means: run this fragment on Ray instead (the query still answers). Its
``reason`` says why (``throttled``, ``timeout``, ``crashed``, ``function_error``, ``not_found``,
``access_denied``, ``endpoint``, ``credentials``, ``payload_too_large``, ``result_lost``,
``bad_response``, ``unsupported`` (not a fragment Lambda can run: exchange inputs, in-memory
or local tables)); ``permanent`` ones (configuration: a missing function, a denied invoke, a
wrong region or endpoint, no credentials) will fail the same way for every fragment, so the
runtime should warn once and stop offloading for the query. ``LambdaQueryError`` is a fragment
DuckDB rejected on Lambda: it would fail on Ray the same way.
"""

from __future__ import annotations

import json

from puffin.errors import ExecutionError, PuffinError, TransientError

PERMANENT = ("not_found", "access_denied", "endpoint", "credentials")


class LambdaUnavailable(TransientError):
    def __init__(self, reason: str, function: str, detail: str):
        self.reason = reason
        self.function = function
        self.detail = detail
        super().__init__(f"Lambda function {function}: {reason.replace('_', ' ')}: {detail}")

    @property
    def permanent(self) -> bool:
        return self.reason in PERMANENT

    def __reduce__(self):
        return (type(self), (self.reason, self.function, self.detail))

    @property
    def setting(self) -> str:
        """The ``lambda_`` setting a permanent failure points at."""
        return {"not_found": "function", "access_denied": "function", "endpoint": "endpoint_url",
                "credentials": "function"}.get(self.reason, "offload")

    def setting_error(self) -> PuffinError:
        """For ``offload="always"``: the failure as an error naming the setting to fix."""
        hint = {"not_found": "no such function in this region (check 'function' and 'region')",
                "access_denied": "the caller may not invoke it (lambda:InvokeFunction)",
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
    if code in ("TooManyRequestsException", "EC2ThrottledException", "ResourceConflictException",
                "ResourceNotReadyException", "ServiceException", "Throttling", "ThrottlingException"):
        return LambdaUnavailable("throttled" if "Many" in code or "Thrott" in code else "function_error",
                                 function, f"{code}: {msg}")
    if code == "ResourceNotFoundException":
        return LambdaUnavailable("not_found", function, f"{code}: {msg} (wrong name or region?)")
    if code in ("AccessDeniedException", "AccessDenied", "UnrecognizedClientException", "InvalidSignatureException",
                "ExpiredTokenException", "KMSAccessDeniedException"):
        return LambdaUnavailable("access_denied", function, f"{code}: {msg}")
    if code in ("RequestTooLargeException", "RequestEntityTooLargeException"):
        return LambdaUnavailable("payload_too_large", function, f"{code}: {msg}")
    return LambdaUnavailable("function_error", function, f"{code or 'HTTP error'}: {msg}")


def from_botocore_error(e, function: str, endpoint: str) -> LambdaUnavailable:
    """A botocore error without an HTTP answer: timeouts, unreachable endpoints, no credentials."""
    name = type(e).__name__
    if name in ("ReadTimeoutError",):
        return LambdaUnavailable("timeout", function, f"no answer within the read timeout ({e})")
    if name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
        return LambdaUnavailable("credentials", function, f"{name}: {e}")
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError", "SSLError",
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
    return LambdaUnavailable("function_error", function, f"{kind}: {text}")
