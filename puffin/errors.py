"""The one exception module: every error Puffin raises on purpose is a ``PuffinError``.

Subclasses say what kind of problem it is, so callers can react (fix the SQL, retry, report a
bug) without parsing messages.
"""

from __future__ import annotations


class PuffinError(Exception):
    """Root of every error Puffin raises deliberately."""


class SqlSyntaxError(PuffinError):
    """The SQL text does not parse. Carries ``line`` and ``column`` (1-based) and a caret."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None):
        super().__init__(message)
        self.line = line
        self.column = column

    def __reduce__(self):
        return (type(self), (str(self), self.line, self.column))


class BindError(PuffinError):
    """A name (table, column, function) does not resolve; the message lists valid names."""


class TypeCheckError(PuffinError):
    """Operand types do not fit the operator or function."""


class NotSupportedError(PuffinError):
    """A construct Puffin recognises but does not run; the message names the construct."""


class ExecutionError(PuffinError):
    """A fragment failed while running. Carries the stage id and keeps the remote cause."""

    def __init__(self, message: str, stage_id: int | None = None, remote_traceback: str = ""):
        super().__init__(message)
        self.stage_id = stage_id
        self.remote_traceback = remote_traceback

    def __reduce__(self):  # keep stage id and traceback when crossing process boundaries
        return (type(self), (str(self), self.stage_id, self.remote_traceback))


class TransientError(PuffinError):
    """A failure that may pass on retry (lost worker, throttled service, timeout)."""


class QueryCancelled(PuffinError):
    """The query was interrupted (KeyboardInterrupt) or ran past its ``timeout``; its tasks
    were cancelled and the session is ready for the next query."""


class InternalError(PuffinError):
    """Something Puffin should never do happened: this is a bug, please report it."""
