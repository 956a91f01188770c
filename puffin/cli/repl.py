"""The interactive shell: statements end with ``;`` (over several lines), dot-commands, history.

Like duckdb's shell: prompts and a history file (``~/.puffin_history``, or ``PUFFIN_HISTORY``)
when stdin is a terminal; a script piped in runs statement by statement with no prompts, errors
go to stderr and the shell goes on, and the exit status is 1 if any statement failed. Ctrl-C
drops the statement being typed or cancels the running query (its tasks are cancelled); Ctrl-D
(end of input) leaves.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Callable
from typing import IO

from puffin import signals
from puffin.cli import output, statements
from puffin.errors import PuffinError

PROMPT, MORE = "puffin> ", "   ...> "
HISTORY_ENV = "PUFFIN_HISTORY"
HISTORY_LENGTH = 10_000

HELP = """\
SQL statements end with ';' and may span lines. EXPLAIN and EXPLAIN ANALYZE work as statements.
.tables                 list the registered tables
.schema [NAME]          the columns and types of NAME (every registered table without NAME)
.register NAME PATH     name a file, glob or directory (Parquet, CSV, JSON; Hive layout too)
.timer on|off           print each statement's run time
.mode table|csv|json    how results print (table: DuckDB's boxes)
.maxrows N              rows a table shows (the rest are counted)
.help                   this text
.quit / .exit           leave (Ctrl-D too); Ctrl-C cancels the statement or the running query"""


class Stop(Exception):
    """``.quit``."""


class Repl:
    def __init__(self, run: Callable, con, mode: str = "table", max_rows: int = 40,
                 interactive: bool | None = None, stdin: IO[str] | None = None,
                 stdout: IO[str] | None = None, stderr: IO[str] | None = None,
                 show_error: Callable[[BaseException], str] | None = None):
        self.run, self.con = run, con  # run(sql) -> (Result, seconds)
        self.mode, self.max_rows, self.timer = mode, max_rows, False
        self.stdin, self.stdout, self.stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
        self.interactive = self.stdin.isatty() if interactive is None else interactive
        self.show_error = show_error or (lambda e: f"Error: {e}")
        self.failures = 0
        self._readline = None
        self._watch: signals.PromptWatch | None = None

    # -- the loop ----------------------------------------------------------------------------
    def loop(self) -> int:
        """Run until end of input or ``.quit``; the exit status (1 if a piped statement failed)."""
        if self.interactive:
            self._open_history()
            if threading.current_thread() is threading.main_thread():
                self._watch = signals.PromptWatch()
            import puffin

            self._say(f"Puffin {puffin.__version__}: SQL ends with ';'. Enter .help for usage hints, "
                      "Ctrl-D to leave.")
        buffer: list[str] = []
        try:
            while True:
                try:
                    line = self._read(MORE if buffer else PROMPT)
                except KeyboardInterrupt:  # drop what was typed, as a shell does
                    if self.interactive:
                        self.stdout.write("^C\n")
                    buffer.clear()
                    continue
                if line is None:
                    break
                if not buffer and line.strip().startswith("."):
                    self._remember(line.strip())
                    try:
                        self.dot(line.strip())
                    except Stop:
                        break
                    continue
                buffer.append(line)
                text = "\n".join(buffer)
                complete, rest = statements.split(text)
                if not complete:
                    if statements.is_blank(text, open_comment=False):  # blank lines, whole comments
                        buffer.clear()
                    continue
                self._remember(text[: len(text) - len(rest)])
                buffer = [] if statements.is_blank(rest) else [rest.lstrip("\n")]
                for stmt in complete:
                    self.execute(stmt)
            leftover = "\n".join(buffer)
            if not statements.is_blank(leftover) and not self.interactive:
                self.execute(leftover.strip())  # a script's last statement without its ';'
        finally:
            if self.interactive:
                self.stdout.write("\n")
                self._save_history()
            if self._watch is not None:
                self._watch.close()
                self._watch = None
        return 1 if self.failures and not self.interactive else 0

    def _read(self, prompt: str) -> str | None:
        if self.interactive:
            watch = self._watch
            try:
                if watch is not None:
                    watch.at_prompt = True
                return input(prompt)
            except EOFError:
                return None
            finally:
                if watch is not None:
                    watch.at_prompt = False
        line = self.stdin.readline()
        return None if line == "" else line.rstrip("\n")

    def execute(self, sql: str) -> None:
        """One statement: its result printed in the current mode, or its error on stderr."""
        try:
            result, seconds = self.run(sql)
            output.write(result, self.mode, stream=self.stdout, max_rows=self.max_rows)
            if self.timer:
                self.stdout.write(f"Run Time (s): real {seconds:.3f}\n")
        except KeyboardInterrupt:
            self.failures += 1
            self._err("Interrupted: the query was cancelled")
        except Exception as e:  # noqa: BLE001 - a shell reports and goes on
            self.failures += 1
            self._err(self.show_error(e))
        self.stdout.flush()

    # -- dot-commands ------------------------------------------------------------------------
    def dot(self, line: str) -> None:
        cmd, _, arg = line.partition(" ")
        arg = arg.strip()
        handler = {
            ".tables": self._tables, ".schema": self._schema, ".register": self._register,
            ".timer": self._timer, ".mode": self._mode, ".maxrows": self._maxrows,
            ".help": lambda _: self._say(HELP), ".quit": self._quit, ".exit": self._quit,
        }.get(cmd.lower())
        if handler is None:
            self.failures += 1
            self._err(f"Error: unknown command {cmd}; .help lists the commands")
            return
        try:
            handler(arg)
        except Stop:
            raise
        except KeyboardInterrupt:
            self._err("Interrupted")
        except Exception as e:  # noqa: BLE001
            self.failures += 1
            self._err(self.show_error(e))

    def _tables(self, _: str) -> None:
        for name in self.con.tables():
            self._say(name)

    def _schema(self, arg: str) -> None:

        names = [arg] if arg else self.con.tables()
        for name in names:
            ref = name if re.fullmatch(r"[A-Za-z_][\w.$]*", name) else '"' + name.replace('"', '""') + '"'
            result, _ = self.run(f"SELECT * FROM {ref} LIMIT 0")
            table = output.plain(result.arrow())
            db = signals.connect()
            try:
                types = db.from_arrow(table).types
            finally:
                db.close()
            cols = ", ".join(f"{_ident(c)} {t}" for c, t in zip(table.column_names, types))
            self._say(f"CREATE TABLE {name}({cols});")

    def _register(self, arg: str) -> None:
        name, _, path = arg.partition(" ")
        path = path.strip()
        if len(path) >= 2 and path[0] == path[-1] and path[0] in "'\"":
            path = path[1:-1]
        if not name or not path:
            raise PuffinError("usage: .register NAME PATH")
        self.con.register(name, path)

    def _timer(self, arg: str) -> None:
        if arg.lower() not in ("on", "off"):
            raise PuffinError("usage: .timer on|off")
        self.timer = arg.lower() == "on"

    def _mode(self, arg: str) -> None:
        if not arg:
            self._say(self.mode)
            return
        mode = output.MODE_ALIASES.get(arg.lower(), arg.lower())
        if mode not in ("table", "csv", "json"):
            raise PuffinError(f"usage: .mode table|csv|json (not {arg!r})")
        self.mode = mode

    def _maxrows(self, arg: str) -> None:
        if not arg.isdigit() or int(arg) < 1:
            raise PuffinError("usage: .maxrows N (a positive number)")
        self.max_rows = int(arg)

    def _quit(self, _: str) -> None:
        raise Stop

    # -- history -----------------------------------------------------------------------------
    def _open_history(self) -> None:
        try:
            import readline
        except ImportError:  # no line editing on this platform: input() still works
            return
        self._readline = readline
        readline.set_auto_history(False)  # one entry per statement, not per line
        readline.set_history_length(HISTORY_LENGTH)
        try:
            readline.read_history_file(history_path())
        except (FileNotFoundError, PermissionError, OSError):
            pass

    def _remember(self, text: str) -> None:
        if self._readline is None:
            return
        entry = " ".join(line.strip() for line in text.strip().splitlines() if line.strip())
        if entry:
            self._readline.add_history(entry)

    def _save_history(self) -> None:
        if self._readline is None:
            return
        try:
            self._readline.write_history_file(history_path())
        except OSError as e:
            self._err(f"could not save the history: {e}")

    # -- output ------------------------------------------------------------------------------
    def _say(self, text: str) -> None:
        self.stdout.write(text + "\n")

    def _err(self, text: str) -> None:
        self.stdout.flush()
        self.stderr.write(text + "\n")
        self.stderr.flush()


def history_path() -> str:
    return os.environ.get(HISTORY_ENV) or os.path.join(os.path.expanduser("~"), ".puffin_history")


def _ident(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z_0-9]*", name) else '"' + name.replace('"', '""') + '"'
