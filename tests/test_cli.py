"""The ``puffin`` command line through its real entry points (``python -m puffin`` and the installed
``puffin`` script), each run a fresh process: output, exit codes, the files written (checked
against DuckDB), the shell driven through stdin, the progress spinner, and quiet stderr."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from puffin.cli import statements

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(os.path.dirname(sys.executable), "puffin")
AGG = ("SELECT l_returnflag, l_linestatus, count(*) AS n, sum(l_extendedprice) AS total "
       "FROM lineitem GROUP BY ALL ORDER BY ALL")
SLOW = "SELECT sum(hash(i) % 7) AS s FROM range(100000000) t(i)"  # ~0.5 s of DuckDB: over a 0.2 s delay


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("home")
    e = dict(os.environ, HOME=str(home), PUFFIN_HISTORY=str(home / ".puffin_history"))
    for name in ("PUFFIN_PRESTART", "PUFFIN_LOG_LEVEL", "PUFFIN_PROGRESS", "PUFFIN_PROGRESS_DELAY", "RAY_ADDRESS"):
        e.pop(name, None)  # the CLI's own defaults (the test session sets PUFFIN_PRESTART=0)
    return e


def puffin(*args: str, env: dict, stdin: str | None = None, script: bool = False, cwd: str = ROOT,
           timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [SCRIPT] if script else [sys.executable, "-m", "puffin"]
    return subprocess.run(cmd + list(args), input=stdin, capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout, check=False)


def lineitem(tpch_dir: str) -> str:
    return f"lineitem={tpch_dir}/lineitem"


# -- puffin sql ---------------------------------------------------------------------------------
@pytest.mark.parametrize("script", [False, True], ids=["python-m", "script"])
def test_sql_prints_the_table_like_duckdb(tpch_dir, env, script):
    if script and not os.path.exists(SCRIPT):
        pytest.skip("the puffin script is not installed: pip install -e .")
    r = puffin("sql", "-r", f"nation={tpch_dir}/nation",
               "SELECT n_nationkey, n_name FROM nation WHERE n_nationkey < 3 ORDER BY 1", env=env, script=script)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # quiet: no Ray or Puffin chatter
    lines = r.stdout.splitlines()
    assert lines[0].startswith("┌") and lines[-1].startswith("└")
    assert "n_nationkey" in lines[1] and "n_name" in lines[1] and "varchar" in lines[2]
    assert [ln.split("│")[2].strip() for ln in lines[4:-1]] == ["ALGERIA", "ARGENTINA", "BRAZIL"]


def test_sql_formats_match_duckdb(tpch_dir, oracle, env, tmp_path):
    expected = oracle.sql(AGG).to_arrow_table()

    csv = puffin("sql", "-r", lineitem(tpch_dir), "--format", "csv", AGG, env=env)
    assert csv.returncode == 0, csv.stderr
    got = pacsv.read_csv(io.BytesIO(csv.stdout.encode()))
    assert got.column_names == expected.column_names
    assert got.column("n").to_pylist() == expected.column("n").to_pylist()
    assert [round(v, 2) for v in got.column("total").to_pylist()] == \
        [float(v) for v in expected.column("total").to_pylist()]

    js = puffin("sql", "-r", lineitem(tpch_dir), "-f", "json", AGG, env=env)
    assert js.returncode == 0, js.stderr
    rows = json.loads(js.stdout)
    assert [(r["l_returnflag"], r["l_linestatus"], r["n"]) for r in rows] == \
        [(a, b, n) for a, b, n, _ in oracle.sql(AGG).fetchall()]

    out = tmp_path / "agg.parquet"
    pqr = puffin("sql", "-r", lineitem(tpch_dir), "--format", "parquet", "--output", str(out), AGG, env=env)
    assert pqr.returncode == 0 and pqr.stdout == "", pqr.stderr
    got = pq.read_table(out)
    assert got.cast(expected.schema).equals(expected)  # exact: decimals, counts, order
    assert got.schema.field("total").type == pa.decimal128(38, 2)

    text = tmp_path / "agg.csv"
    assert puffin("sql", "-r", lineitem(tpch_dir), "-f", "csv", "-o", str(text), AGG, env=env).returncode == 0
    assert text.read_text() == csv.stdout


def test_sql_from_stdin_runs_each_statement_and_the_demo_dataset(tpch_dir, env):
    r = puffin("sql", "--demo", env=dict(env, PUFFIN_DEMO_DIR=tpch_dir), stdin=(
        "SELECT count(*) AS nations FROM nation;\n-- a comment; with a semicolon\n"
        "SELECT r_name FROM region WHERE r_name = 'ASIA'"))
    assert r.returncode == 0, r.stderr
    assert "nations" in r.stdout and "25" in r.stdout and "ASIA" in r.stdout


def test_errors_print_the_message_and_exit_1(tpch_dir, env):
    syntax = puffin("sql", "SELEC 1", env=env)
    assert syntax.returncode == 1 and syntax.stdout == ""
    assert syntax.stderr.startswith("Error: ") and "SELEC" in syntax.stderr and "^" in syntax.stderr
    assert "Traceback" not in syntax.stderr

    unknown = puffin("sql", "-r", f"nation={tpch_dir}/nation", "SELECT * FROM nowhere", env=env)
    assert unknown.returncode == 1 and "nowhere" in unknown.stderr and "nation" in unknown.stderr
    assert "Traceback" not in unknown.stderr

    missing = puffin("sql", "-r", "t=/nonexistent/dir", "SELECT 1", env=env)
    assert missing.returncode == 1 and "/nonexistent/dir" in missing.stderr and "Traceback" not in missing.stderr

    debug = puffin("sql", "SELEC 1", env=dict(env, PUFFIN_LOG_LEVEL="DEBUG"))
    assert debug.returncode == 1 and "Traceback" in debug.stderr  # for bug reports


@pytest.mark.parametrize("args", [
    ("sql", "--format", "parquet", "SELECT 1"),  # parquet needs --output
    ("sql", "--register", "no-equals-sign", "SELECT 1"),
    ("sql", "--format", "xml", "SELECT 1"),
    ("sql", "--timeout", "0", "SELECT 1"),
    ("sql", "-o", "x.csv", "SELECT 1; SELECT 2"),
    ("sql", "  -- nothing"),
    ("frobnicate",),
], ids=["parquet-stdout", "register", "format", "timeout", "output-two", "empty", "command"])
def test_bad_usage_exits_2(env, args, tmp_path):
    r = puffin(*args, env=env, cwd=str(tmp_path))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Usage:" in r.stderr or "Error:" in r.stderr


def test_explain_and_explain_analyze(tpch_dir, env):
    plan = puffin("explain", "-r", lineitem(tpch_dir), "--target-partitions", "2", AGG, env=env)
    assert plan.returncode == 0, plan.stderr
    assert "Stage 0" in plan.stdout and "planning:" in plan.stdout and "rows in=" not in plan.stdout

    analyzed = puffin("explain", "--analyze", "-r", lineitem(tpch_dir), AGG, env=env)
    assert analyzed.returncode == 0, analyzed.stderr
    assert "rows in=" in analyzed.stdout and "planning:" in analyzed.stdout


# -- the shell ----------------------------------------------------------------------------------
def test_repl_through_stdin(tpch_dir, env):
    script = "\n".join([
        ".register nation " + f"{tpch_dir}/nation",
        "SELECT n_name,",
        "       n_regionkey",
        "FROM nation",
        "WHERE n_nationkey = 7;",
        ".tables",
        ".schema nation",
        "SELECT * FROM no_such_table;",
        "SELECT 'still here' AS alive;",
        ".mode csv",
        "SELECT n_name FROM nation ORDER BY n_name LIMIT 2;",
        ".timer on",
        "EXPLAIN SELECT count(*) FROM nation;",
        ".nonsense",
        ".quit",
        "SELECT 'not reached';",
    ]) + "\n"
    r = puffin(env=env, stdin=script)
    assert r.returncode == 1, r.stderr  # a piped script with failed statements reports it
    out = r.stdout
    assert "GERMANY" in out and "n_regionkey" in out  # the multi-line statement
    assert "\nnation\n" in out  # .tables
    assert "CREATE TABLE nation(n_nationkey BIGINT, n_name VARCHAR, n_regionkey BIGINT, n_comment VARCHAR);" in out
    assert "no_such_table" in r.stderr and "Traceback" not in r.stderr  # the error, then the shell goes on
    assert "still here" in out
    assert "n_name\nALGERIA\nARGENTINA\n" in out  # .mode csv
    assert "Stage 0" in out and "Run Time (s): real" in out  # EXPLAIN prints as text; .timer
    assert ".nonsense" in r.stderr
    assert "not reached" not in out
    assert "puffin>" not in out  # no prompts when stdin is not a terminal


def test_repl_exit_status_0_and_last_statement_without_semicolon(env):
    r = puffin("repl", env=env, stdin="SELECT 1 AS one;\n/* a comment\n; still a comment */\nSELECT 2 AS two")
    assert r.returncode == 0, r.stderr
    assert "one" in r.stdout and "two" in r.stdout and r.stderr == ""


class Terminal:
    """``python -m puffin`` on a pty, as a person at a terminal drives it."""

    def __init__(self, env: dict):
        import pty

        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the real script, on the pty
            os.execve(sys.executable, [sys.executable, "-m", "puffin"], env)
        self.seen = b""

    def until(self, marker: bytes, seconds: float = 30, after: int = 0) -> bool:
        """Whether ``marker`` shows (past offset ``after`` of the output) within ``seconds``."""
        import select
        import time

        end = time.monotonic() + seconds
        while marker not in self.seen[after:] and time.monotonic() < end:
            if select.select([self.fd], [], [], 0.1)[0]:
                try:
                    self.seen += os.read(self.fd, 65536)
                except OSError:
                    break
        return marker in self.seen[after:]

    def prompt_again(self, mark: int) -> bool:
        """The shell is back at its prompt (reading) after output position ``mark``: keys sent
        now reach the line editor, not a statement still printing."""
        return self.until(b"puffin> ", after=mark)

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def exit_code(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        self.pid = 0
        return os.waitstatus_to_exitcode(status)

    def close(self) -> None:
        import signal

        if self.pid:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.fd)


def test_shell_on_a_terminal_ctrl_c_cancels_and_history_is_kept(env, tmp_path):
    """On a terminal (a pty here): prompts, Ctrl-C drops the typed line, Ctrl-C cancels a query
    running in this process (minutes long otherwise) and the shell goes on; Ctrl-D leaves;
    statements are in the history file, one entry each."""
    import signal
    import time

    history = tmp_path / "history"
    term = Terminal(dict(env, PUFFIN_HISTORY=str(history)))
    try:
        assert term.until(b"puffin> ")
        term.write(b"SELECT 1 AS a,\n")
        assert term.until(b"...> ")
        term.write(b"  2 AS b;\n")
        row = b"\xe2\x94\x82     1 \xe2\x94\x82     2 \xe2\x94\x82"
        assert term.until(row)  # the row
        assert term.prompt_again(term.seen.rindex(row))
        term.write(b"SELECT 'typed' ")
        assert term.until(b"'typed' ", 10, after=term.seen.rindex(b"puffin> "))
        for _ in range(5):  # Ctrl-C while typing (a key can land before the line editor reads)
            term.write(b"\x03")
            if term.until(b"^C", 5):
                break
        assert b"^C" in term.seen
        term.write(b"SELECT sum(hash(i) % 7) FROM range(20000000000) t(i);\n")
        assert term.until(b"Running query")  # the spinner: stderr is the terminal
        started = time.monotonic()
        os.kill(term.pid, signal.SIGINT)
        assert term.until(b"Interrupted", 20), term.seen[-500:]
        assert time.monotonic() - started < 20
        term.write(b"SELECT 'after' AS z;\n")
        assert term.until(b"after  ")
        assert term.prompt_again(term.seen.rindex(b"after  "))
        term.write(b"\x04")  # Ctrl-D
        assert term.exit_code() == 0
    finally:
        term.close()
    assert history.read_text().splitlines() == [
        "SELECT 1 AS a, 2 AS b;", "SELECT sum(hash(i) % 7) FROM range(20000000000) t(i);", "SELECT 'after' AS z;"]


def test_shell_ctrl_c_typed_in_one_burst_with_the_text_is_seen_at_once(env, tmp_path):
    """Text and Ctrl-C in one write (a paste ending in Ctrl-C, or fast typing), after a query ran
    (DuckDB's and Ray's threads are up): each Ctrl-C shows ``^C`` at once, exactly once. Before
    the prompt's SIGINT watch (``puffin.signals.PromptWatch``), 5 of 15 waited for the next key:
    readline acts on a signal only when its ``select()`` is interrupted, and this one came while
    it handled the typed keys, or on another thread."""
    term = Terminal(dict(env, PUFFIN_HISTORY=str(tmp_path / "history")))
    try:
        assert term.until(b"puffin> ")
        for i in range(15):
            mark = len(term.seen)
            term.write(f"SELECT {i} AS round;\n".encode())
            assert term.until(b"round", after=mark) and term.prompt_again(term.seen.rindex(b"round"))
            mark = len(term.seen)
            term.write(b"SELECT 'typed' \x03")
            assert term.until(b"^C", 3, after=mark), f"round {i}: Ctrl-C not seen: {term.seen[mark:]!r}"
            term.until(b"never shown", 0.3)
            assert term.seen[mark:].count(b"^C") == 1, f"round {i}: {term.seen[mark:]!r}"
        term.write(b"\x04")
        assert term.exit_code() == 0
    finally:
        term.close()


# -- progress, quiet ----------------------------------------------------------------------------
def test_progress_shown_on_a_long_query_when_forced(env):
    fast = dict(env, PUFFIN_PROGRESS_DELAY="0.2")
    shown = puffin("sql", "--progress", SLOW, env=fast)
    assert shown.returncode == 0, shown.stderr
    assert "Running query" in shown.stderr and "s" in shown.stderr and "│" in shown.stdout
    by_env = puffin("sql", SLOW, env=dict(fast, PUFFIN_PROGRESS="1"))
    assert "Running query" in by_env.stderr
    assert puffin("sql", SLOW, env=fast).stderr == ""  # stderr is not a terminal: off
    assert puffin("sql", "--no-progress", SLOW, env=dict(fast, PUFFIN_PROGRESS="1")).stderr == ""
    assert puffin("sql", "--progress", "SELECT 1", env=env).stderr == ""  # quick: nothing shown


def test_ray_token_auth_warning_is_quiet_unless_asked_for(env):
    code = ("from puffin.cli import quiet; quiet.configure(); import ray; "
            "from ray._private.authentication import authentication_token_setup as s; "
            "s._warn_token_auth_enabled(); s._warn_token_auth_disabled(); "
            "import logging; logging.getLogger('ray._private.worker').error('Unhandled error (suppress with x)')")
    quiet_run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert quiet_run.returncode == 0 and quiet_run.stderr == "", quiet_run.stderr
    loud = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(env, PUFFIN_LOG_LEVEL="DEBUG"), check=False)
    assert "Token authentication is enabled" in loud.stderr and "Unhandled error" in loud.stderr


def test_query_on_ray_prints_nothing_but_the_result(env):
    """--timeout sends the query to Ray (started for it here): its start and stop stay quiet."""
    r = puffin("sql", "--timeout", "120", "SELECT 42 AS answer", env=env)
    assert r.returncode == 0, r.stderr
    assert "42" in r.stdout and r.stderr == ""


# -- history ------------------------------------------------------------------------------------
def test_history_shows_the_query_log_newest_first(env, tmp_path):
    from puffin import querylog

    log = querylog.open_log(str(tmp_path / "log.jsonl"))
    for query in ("SELECT 'first'", "SELECT 'second'", "SELECT 'broken'"):
        try:
            with log.timed(query) as entry:
                entry["rows"] = 1
                if "broken" in query:
                    raise ValueError("it broke")
        except ValueError:
            pass
    r = puffin("history", "--last", "2", "--log", str(tmp_path / "log.jsonl"), env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.index("broken") < r.stdout.index("second") and "first" not in r.stdout
    assert "ValueError: it broke" in r.stdout and "duration_ms" in r.stdout
    js = puffin("history", "-f", "json", env=dict(env, PUFFIN_HOME=str(tmp_path / "home")))
    assert js.returncode == 0 and json.loads(js.stdout) == []  # the default log, empty
    bad = puffin("history", "--log", "ftp://nowhere", env=env)
    assert bad.returncode == 1 and "ftp" in bad.stderr and "Traceback" not in bad.stderr


# -- bench --------------------------------------------------------------------------------------
def test_bench_passes_its_arguments_to_the_harness(env):
    r = puffin("bench", "--help", env=env)
    assert r.returncode == 0, r.stderr
    assert "--engines" in r.stdout and "--sf" in r.stdout  # the harness's own help


def test_bench_outside_a_clone_says_so(env, tmp_path):
    (tmp_path / "puffin").symlink_to(os.path.join(ROOT, "puffin"))  # the package without the clone
    r = puffin("bench", "--sf", "0.01", env=env, cwd=str(tmp_path))
    assert r.returncode == 1
    assert "clone" in r.stderr and "benchmarks" in r.stderr


# -- statements ---------------------------------------------------------------------------------
def test_statement_splitting():
    done, rest = statements.split("SELECT ';' AS a; SELECT \"x;y\" FROM t -- c;\n; SELECT $$a;b$$; SELECT 1")
    assert done == ["SELECT ';' AS a", "SELECT \"x;y\" FROM t -- c;", "SELECT $$a;b$$"]
    assert rest == " SELECT 1"
    assert statements.split("SELECT 'it''s; fine';") == (["SELECT 'it''s; fine'"], "")
    assert statements.split("SELECT 'open; string") == ([], "SELECT 'open; string")
    assert statements.split("/* ; */ -- ;\n;") == ([], "")
    assert statements.split_all("SELECT 1; SELECT 2") == ["SELECT 1", "SELECT 2"]
    assert statements.is_blank("/* open") and not statements.is_blank("/* open", open_comment=False)
