"""The ``puffin`` command line: ``puffin sql``, ``puffin explain``, the shell, ``puffin bench``.

Modules: ``app`` (the commands, built with click), ``repl`` (the shell), ``output`` (table, CSV,
JSON, Parquet), ``statements`` (splitting SQL at ``;``), ``quiet``
(Ray's log noise off the terminal unless ``PUFFIN_LOG_LEVEL`` asks for it). The progress line is
``puffin.progress``, shared with ``Connection.sql(progress=...)``.
"""

from puffin.cli.app import cli, main

__all__ = ["cli", "main"]
