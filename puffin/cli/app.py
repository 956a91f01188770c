"""The ``puffin`` command: ``sql``, ``explain``, the shell (no command, or ``repl``), ``history``,
``bench``.

The CLI connects with ``prestart=False`` in embedded mode. On one machine every query over local
files plans to one task that runs in this process (``Connection.sql``), so a local Ray started in
the background at connect would do nothing but take seconds of CPU on every core (then be torn
down at exit, another ~2 s); a query that does need Ray (``--timeout``: only Ray tasks can be
cancelled at a deadline) starts it on demand. The shell does the same: while Ray starts in a
background thread the process answers Ctrl-C late (seen: 40 s on a busy two-core machine). With
a cluster address (``--address``, ``RAY_ADDRESS``) every query runs there, so joining starts at
once; ``PUFFIN_PRESTART=1/0`` overrides both.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from contextlib import contextmanager

import click

from puffin import progress
from puffin.cli import output, quiet, statements

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
DEMO_ENV = "PUFFIN_DEMO_DIR"
DEMO_SF = 0.1


# -- options shared by the commands that connect ------------------------------------------------
def _register_pair(ctx, param, values):
    pairs = []
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise click.BadParameter(f"{value!r}: expected NAME=PATH", ctx=ctx, param=param)
        pairs.append((name.strip(), path.strip()))
    return tuple(pairs)


CONNECTION_OPTIONS = [
    click.option("--register", "-r", "register", multiple=True, callback=_register_pair, metavar="NAME=PATH",
                 help="Name a file, glob or directory as a table (repeatable)."),
    click.option("--demo", is_flag=True, default=None,
                 help=f"Register the demo dataset: TPC-H SF{DEMO_SF:g} (made with tpchgen-cli once; "
                      f"directory: ${DEMO_ENV}, ./data/tpch-sf{DEMO_SF:g} or ~/.cache/puffin)."),
    click.option("--address", default=None, metavar="ADDRESS",
                 help="A Ray cluster to run on (default: $RAY_ADDRESS, else embedded)."),
    click.option("--target-partitions", type=click.IntRange(min=1), default=None,
                 help="Partitions per hash exchange (default: from input sizes and CPUs)."),
    click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
                 help="Cancel a query running longer than this (runs it on Ray)."),
    click.option("--dialect", default=None, metavar="NAME", help="SQL dialect (any of sqlglot's; default duckdb)."),
    click.option("--progress/--no-progress", "show_progress", default=None,
                 help="Show progress (stages, tasks, rows and bytes scanned, time) for queries over ~1 s "
                      "(default: when stderr is a terminal; $PUFFIN_PROGRESS=1/0).") ,
    click.option("--max-rows", type=click.IntRange(min=1), default=None,
                 help="Rows a table shows (default 40; the rest are counted)."),
]


def connection_options(f):
    for option in reversed(CONNECTION_OPTIONS):
        f = option(f)
    return f


def _merged(ctx: click.Context, local: dict) -> dict:
    """The command's own options over those given before it (``puffin --demo sql ...``)."""
    merged = dict((ctx.obj or {}).get("options", {}))
    for key, value in local.items():
        if key == "register":
            merged[key] = tuple(merged.get(key, ())) + tuple(value)
        elif value is not None:
            merged[key] = value
    merged.setdefault("register", ())
    return merged


# -- errors -------------------------------------------------------------------------------------
def error_text(e: BaseException) -> str:
    """What a user sees for an error: the message of a PuffinError, a short line for anything
    else; tracebacks only with PUFFIN_LOG_LEVEL=DEBUG."""
    from puffin.errors import PuffinError

    debug = quiet.debugging()
    if isinstance(e, PuffinError):
        text = f"Error: {e}"
        remote = getattr(e, "remote_traceback", "")
        if debug and remote:
            text += "\n" + remote
    elif isinstance(e, OSError):
        text = f"Error: {e.strerror or e}" + (f": {e.filename}" if getattr(e, "filename", None) else "")
    else:
        text = f"Internal error ({type(e).__name__}): {e}\nThis is a bug in Puffin; please report it."
    if debug:
        text += "\n" + "".join(traceback.format_exception(type(e), e, e.__traceback__)).rstrip()
    return text


@contextmanager
def _guard():
    """PuffinErrors and I/O errors as a message on stderr and exit status 1, Ctrl-C as 130, a
    closed pipe (``puffin sql ... | head``) as a quiet exit."""
    from puffin.errors import PuffinError

    try:
        yield
    except (PuffinError, OSError) as e:
        if isinstance(e, BrokenPipeError):
            _quiet_pipe()
            sys.exit(0)
        click.echo(error_text(e), err=True)
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        click.echo("Interrupted: the query was cancelled", err=True)
        sys.exit(EXIT_INTERRUPTED)


def _quiet_pipe() -> None:
    """Python would complain when flushing stdout to a closed pipe at exit: point it at /dev/null."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


# -- connecting ---------------------------------------------------------------------------------
class Runner:
    """A connection and how its queries run: dialect, timeout, progress."""

    def __init__(self, opts: dict, prestart: bool | None):
        import puffin

        self.con = puffin.connect(address=opts.get("address"), target_partitions=opts.get("target_partitions"),
                                  prestart=prestart)
        self.dialect = opts.get("dialect") or "duckdb"
        self.timeout = opts.get("timeout")
        self.progress = progress.wanted(opts.get("show_progress"))
        for name, path in opts.get("register", ()):
            self.con.register(name, path)
        if opts.get("demo"):
            register_demo(self.con)

    def __call__(self, sql: str):
        """Run one statement: (Result, seconds); Ctrl-C cancels it (KeyboardInterrupt: the library
        interrupts a query running in-process, and cancels one on Ray)."""
        with progress.Bar(*self.progress) as bar:
            result = self.con.sql(sql, dialect=self.dialect, timeout=self.timeout, progress=bar)
        return result, bar.elapsed


def _prestart(opts: dict) -> bool | None:
    """Start Ray at connect only for a named cluster (every query runs there) or when
    PUFFIN_PRESTART says so; see the module's docstring."""
    if os.environ.get("PUFFIN_PRESTART", "").strip():
        return None  # the library reads it
    return bool(opts.get("address") or os.environ.get("RAY_ADDRESS"))


def demo_dir() -> str:
    if os.environ.get(DEMO_ENV):
        return os.environ[DEMO_ENV]
    local = os.path.join("data", f"tpch-sf{DEMO_SF:g}")  # what `python -m puffin.demo` makes
    if os.path.exists(os.path.join(local, "_SUCCESS")):
        return local
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "puffin", f"tpch-sf{DEMO_SF:g}")


def register_demo(con) -> None:
    """The bundled demo dataset (``puffin.demo``): TPC-H tables, generated on first use."""
    from puffin import demo

    directory = demo_dir()
    if not os.path.exists(os.path.join(directory, "_SUCCESS")):
        click.echo(f"generating the demo dataset (TPC-H SF{DEMO_SF:g}, once) in {directory} ...", err=True)
        demo.generate_tpch(directory, DEMO_SF)
    demo.register_tpch(con, directory)


# -- commands -----------------------------------------------------------------------------------
@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@connection_options
@click.version_option(package_name="puffindb", prog_name="puffin")
@click.pass_context
def cli(ctx: click.Context, **options):
    """Puffin: distributed SQL over Parquet, CSV, JSON and Iceberg, on DuckDB and Ray.

    Without a command, opens the interactive shell (as `puffin repl`).
    Set PUFFIN_LOG_LEVEL=DEBUG to see Ray's and Puffin's logs.
    """
    ctx.ensure_object(dict)
    ctx.obj["options"] = options
    if ctx.invoked_subcommand is None:
        ctx.invoke(repl)


@cli.command()
@click.argument("query", required=False)
@click.option("--format", "-f", "fmt", type=click.Choice(output.FORMATS), default="table", show_default=True,
              help="How the result is written.")
@click.option("--output", "-o", "out", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the result to FILE (needed for parquet).")
@connection_options
@click.pass_context
def sql(ctx: click.Context, query: str | None, fmt: str, out: str | None, **options):
    """Run QUERY and print its result (QUERY '-' or none: read the SQL from stdin).

    Several statements separated by ';' run in turn. EXPLAIN [ANALYZE] works here too.
    """
    opts = _merged(ctx, options)
    if query is None or query == "-":
        if sys.stdin.isatty():
            raise click.UsageError("give a QUERY, or pipe SQL into stdin")
        query = sys.stdin.read()
    stmts = statements.split_all(query)
    if not stmts:
        raise click.UsageError("QUERY holds no statement")
    if fmt == "parquet" and out is None:
        raise click.UsageError("--format parquet needs --output FILE")
    if out is not None and len(stmts) > 1:
        raise click.UsageError("--output takes the result of one statement")
    with _guard():
        run = Runner(opts, prestart=_prestart(opts))
        for stmt in stmts:
            result, _ = run(stmt)
            output.write(result, fmt, out, max_rows=opts.get("max_rows") or 40)
            sys.stdout.flush()


@cli.command()
@click.argument("query")
@click.option("--analyze", is_flag=True, help="Run the query and show rows, bytes and time per stage.")
@connection_options
@click.pass_context
def explain(ctx: click.Context, query: str, analyze: bool, **options):
    """Show the distributed plan of QUERY: stages, exchanges, fragments."""
    opts = _merged(ctx, options)
    stmts = statements.split_all(query)
    if len(stmts) != 1:
        raise click.UsageError("explain takes one statement")
    body = stmts[0]
    given = re.match(r"EXPLAIN\s+(ANALYZE\s+)?", body, re.IGNORECASE)  # `puffin explain "EXPLAIN ..."`
    if given:
        analyze, body = analyze or bool(given.group(1)), body[given.end():]
    with _guard():
        run = Runner(opts, prestart=_prestart(opts))
        result, _ = run(("EXPLAIN ANALYZE " if analyze else "EXPLAIN ") + body)
        click.echo(result.render())


@cli.command()
@connection_options
@click.option("--mode", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True,
              help="How results print (.mode in the shell).")
@click.pass_context
def repl(ctx: click.Context, mode: str = "table", **options):
    """The interactive shell: statements end with ';', .help lists the dot-commands.

    History is kept in ~/.puffin_history ($PUFFIN_HISTORY). With SQL piped into stdin it runs
    the statements without prompts and exits with status 1 if any failed.
    """
    from puffin.cli.repl import Repl

    opts = _merged(ctx, options)
    interactive = sys.stdin.isatty()
    with _guard():
        run = Runner(opts, prestart=_prestart(opts))
        shell = Repl(run, run.con, mode=mode, max_rows=opts.get("max_rows") or 40, interactive=interactive,
                     show_error=error_text)
        code = shell.loop()
    sys.exit(code)


HISTORY_COLUMNS = ("start", "user", "duration", "rows", "cache", "error", "query")


@cli.command()
@click.option("--last", type=click.IntRange(min=1), default=20, show_default=True, help="How many entries.")
@click.option("--since", default=None, metavar="TIME", help="Only entries from TIME on (ISO 8601).")
@click.option("--log", "log_url", default=None, metavar="URL",
              help="The query log: redis://..., rediss://..., a file (default: ~/.puffin/history.jsonl, "
                   "$PUFFIN_HOME).")
@click.option("--format", "-f", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True, help="table shows the main columns; csv and json every field.")
def history(last: int, since: str | None, log_url: str | None, fmt: str):
    """The query log, newest first: when, who, how long (ms), rows, cache, error, query."""
    from puffin import querylog
    from puffin.result import Result

    with _guard():
        log = querylog.open_log(log_url)
        try:
            table = log.history(last=last, since=since)
        except (ValueError, TypeError) as e:
            raise click.BadParameter(str(e), param_hint="--since") from None
        finally:
            log.close()
        if fmt == "table":
            import pyarrow.compute as pc

            table = table.select([c for c in HISTORY_COLUMNS if c in table.column_names])
            if "duration" in table.column_names:
                at = table.column_names.index("duration")
                table = table.set_column(at, "duration_ms", pc.round(table.column(at), 1))
        output.write(Result(table), fmt, max_rows=max(last, 40))


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                               "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]):
    """Run the TPC-H benchmark harness: `python -m benchmarks.tpch ARGS` (`puffin bench --help`).

    The harness is part of a clone of the Puffin repository, not of the installed package.
    """
    root = bench_root()
    if root is None:
        click.echo("Error: puffin bench runs the TPC-H harness in benchmarks/, which is part of a clone of the "
                   "Puffin repository, not of the installed package. Clone the repository, install it with "
                   "`pip install -e '.[bench]'`, and run `puffin bench` (or `python -m benchmarks.tpch`) there.",
                   err=True)
        sys.exit(EXIT_ERROR)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "benchmarks.tpch", *args], env)


def bench_root() -> str | None:
    """The clone that holds ``benchmarks/tpch.py``: the current directory, or the one this
    package was installed from in editable mode."""
    import puffin

    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(puffin.__file__)))
    for root in (os.getcwd(), package_parent):
        if os.path.isfile(os.path.join(root, "benchmarks", "tpch.py")):
            return root
    return None


def main(argv: list[str] | None = None) -> None:
    """The ``puffin`` console script and ``python -m puffin``."""
    try:
        quiet.configure()
    except ValueError as e:
        click.echo(f"warning: {e}; logs stay quiet", err=True)
        os.environ.pop(quiet.ENV, None)
        quiet.configure()
    cli.main(args=argv, prog_name="puffin")

