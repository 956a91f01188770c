"""Keep Ray's log noise off the user's terminal; ``PUFFIN_LOG_LEVEL`` lets it back in.

What reaches a CLI user's terminal from Ray is its Python logging: the token-auth notice
("Token authentication is enabled for this Ray cluster ...", logged when a driver joins a local
cluster found by ``address="auto"`` while ``~/.ray/auth_token`` exists), "Unhandled error"
records for failed tasks nobody fetched (a cancelled query's siblings), and Python warnings
raised in Ray's modules. ``RAY_AUTH_MODE`` is left alone: it changes how Ray authenticates, not
what it prints, and setting it would break joining a head that requires tokens.

Ray gives its ``ray`` logger a stderr handler when it is imported, which Puffin does lazily (in
a background thread, and only for queries that need Ray). So the filter is put on that handler
right after ``import ray`` runs, by a one-shot import hook: the CLI never imports Ray itself.
With ``PUFFIN_LOG_LEVEL`` unset Ray's records are dropped (Puffin raises its own errors for
whatever matters); set to a level, Puffin's and Ray's records at that level and above show.
"""

from __future__ import annotations

import importlib.abc
import logging
import os
import sys
import warnings

ENV = "PUFFIN_LOG_LEVEL"


def level_from_env() -> int | None:
    """The level ``PUFFIN_LOG_LEVEL`` names (a name or a number), or None when unset/empty."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return None
    if raw.isdigit():
        return int(raw)
    level = logging.getLevelName(raw.upper())
    if isinstance(level, int):
        return level
    raise ValueError(f"{ENV}={raw!r} is not a logging level (DEBUG, INFO, WARNING, ERROR, CRITICAL)")


def debugging() -> bool:
    """Whether PUFFIN_LOG_LEVEL asks for DEBUG (tracebacks with errors)."""
    try:
        level = level_from_env()
    except ValueError:
        return False
    return level is not None and level <= logging.DEBUG


def configure() -> int | None:
    """Set up logging for one CLI process; returns the level asked for (None: quiet)."""
    level = level_from_env()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    puffin_log = logging.getLogger("puffin")
    puffin_log.addHandler(handler)
    puffin_log.setLevel(level if level is not None else logging.WARNING)  # Puffin's own warnings show
    puffin_log.propagate = False
    if level is None:
        # The one Ray message that has its own switch, and Ray's own advice for it; read only by
        # this driver (workers' output never reaches the terminal: log_to_driver is off).
        os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")
        warnings.filterwarnings("ignore", module=r"ray(\.|$)")
    threshold = logging.CRITICAL + 1 if level is None else level
    if "ray" in sys.modules:
        _filter_ray(threshold)
    elif not any(isinstance(f, _AfterRayImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterRayImport(threshold))
    return level


class _BelowThreshold(logging.Filter):
    def __init__(self, threshold: int):
        super().__init__()
        self.threshold = threshold

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.threshold


def _filter_ray(threshold: int) -> None:
    for handler in logging.getLogger("ray").handlers:
        if not any(isinstance(f, _BelowThreshold) for f in handler.filters):
            handler.addFilter(_BelowThreshold(threshold))


class _AfterRayImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when ``ray`` is about to be imported, it asks the other finders for
    its spec and wraps the loader so that the filter goes on as soon as Ray's module has run."""

    def __init__(self, threshold: int):
        self.threshold = threshold

    def find_spec(self, fullname, path, target=None):
        if fullname != "ray":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)  # once; and never consulted again for the lookups below
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run_module, threshold = loader.exec_module, self.threshold

        def exec_module(module):
            run_module(module)
            _filter_ray(threshold)

        loader.exec_module = exec_module  # this spec's own loader instance
        return spec
