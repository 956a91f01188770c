"""The functions' package builds from the repository as cluster/lambda/Dockerfile says, and runs.

``python -m puffin.lambda_bridge.package`` installs the Dockerfile's two pip steps into a
directory, for the functions' platform, from wheels downloaded beforehand by
``scripts/fetch_lambda_wheels.sh`` (no network here). The built tree then runs the Engine and
Catalog handlers in an isolated interpreter whose path is only the tree and the standard
library, on the requests the invoker sends, and the answers equal DuckDB's and pyiceberg's.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import re
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import puffin
from puffin.lambda_bridge import package
from puffin.lambda_bridge import payload as wire
from tests.lambda_bridge.conftest import events_table, scan_fragments

ROOT = Path(package.REPO)
DOCKERFILE = ROOT / package.DOCKERFILE
FETCH = "bash scripts/fetch_lambda_wheels.sh"
# what the functions must not carry or need: the driver's side (Ray, boto3) and the dev tools
NOT_IN_TREE = ("ray", "boto3", "botocore", "sqlglotc", "redis", "pytest", "moto", "pandas")


def instructions(text: str) -> list[tuple[str, str]]:
    """The Dockerfile's (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(m[1].upper(), m[2].strip()) for m in re.finditer(r"^\s*(\w+)\s+(.*)$", joined, re.MULTILINE)]


def pip_installs(run: str) -> list[list[str]]:
    """The arguments after ``pip install`` (or ``python -m pip install``) of each command in a RUN line."""
    lex = shlex.shlex(run, posix=True, punctuation_chars=";&|")
    lex.whitespace_split = True
    commands = [[]]
    for token in lex:
        if token in ("&&", ";", "||", "|", "&"):
            commands.append([])
        else:
            commands[-1].append(token)
    out = []
    for words in commands:
        for i in range(len(words) - 1):
            if words[i] in ("pip", "pip3") and words[i + 1] == "install":
                out.append(words[i + 2:])
                break
            if words[i] == "-m" and words[i + 1:i + 3] == ["pip", "install"]:
                out.append(words[i + 3:])
                break
    return out


def check_dockerfile(text: str) -> None:
    """That ``text`` builds what ``puffin.lambda_bridge.package`` builds: the same base (platform),
    the same files copied, the same two pip steps and nothing else installed but the runtime's
    interface client and boto3 (``package.RUNTIME``), and the same import check."""
    steps = instructions(text)
    assert ("FROM", package.BASE_IMAGE) in steps, (
        f"the package command builds for {package.BASE_IMAGE} (CPython {package.PYTHON_VERSION}, glibc "
        f"{package.GLIBC[0]}.{package.GLIBC[1]}, {package.ARCH}: see puffin/lambda_bridge/package.py); the "
        f"Dockerfile's base is {[a for i, a in steps if i == 'FROM']}")
    # COPY: the requirements file, and the sources Puffin is built from, into one directory
    dest = {}
    for ins, args in steps:
        if ins == "COPY":
            *srcs, to = args.split()
            for src in srcs:
                dest[src] = f"{to.rstrip('/')}/{os.path.basename(src)}" if to.endswith("/") else to
    assert set(dest) == {package.REQUIREMENTS, *package.SOURCES}, dest
    src_dirs = {os.path.dirname(dest[s]) for s in package.SOURCES}
    assert len(src_dirs) == 1 and all(os.path.basename(dest[s]) == s for s in package.SOURCES), dest
    steps_wanted = {("-r", dest[package.REQUIREMENTS]), ("--no-deps", src_dirs.pop())}
    # RUN pip install: exactly those two, plus at most what a Lambda Python base image has
    found = set()
    for args in (args for ins, a in steps if ins == "RUN" for args in pip_installs(a)):
        rest = tuple(a.rstrip("/") if a.startswith("/") else a for a in args if a != "--no-cache-dir")
        if rest in steps_wanted:
            found.add(rest)
        else:
            assert set(rest) <= set(package.RUNTIME), f"a pip step the package command does not mirror: pip install {args}"
    assert found == steps_wanted
    assert package.CHECK in text  # the image build's import check, which the command runs too


def test_package_steps_follow_the_dockerfile():
    check_dockerfile(DOCKERFILE.read_text())
    template = (ROOT / "cluster" / "lambda" / "template.yaml").read_text()
    assert set(re.findall(r"Architectures:\s*\n\s*-\s*(\S+)", template)) == {package.ARCH}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    wheels = package.default_wheels_dir()
    if not os.path.isdir(wheels) or not any(n.endswith(".whl") for n in os.listdir(wheels)):
        pytest.skip(f"no Lambda wheels in {wheels}: run `{FETCH}` once (downloads ~120 MB)")
    why = package.runs_here()
    if why:
        pytest.skip(f"cannot run the functions' tree here: {why}")
    out = tmp_path_factory.mktemp("lambda") / "tree"
    start = time.perf_counter()
    try:
        size = package.build(str(out), wheels=wheels)
    except puffin.PuffinError as e:
        pytest.fail(f"{e}\n(if the wheels are out of date with cluster/lambda/requirements.txt: `{FETCH}`)")
    print(f"built {out}: {size['bytes'] / 1e6:.1f} MB, {size['files']} files in {time.perf_counter() - start:.1f}s")
    return out


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_tree_holds_the_repository_puffin_and_nothing_of_the_driver(tree):
    built = _digests(tree / "puffin")
    repo = _digests(ROOT / "puffin")
    assert set(built) == {p for p in repo if p.endswith(".py") or p.startswith("tpch/queries/")}
    assert all(built[p] == repo[p] for p in built)
    names = {re.split(r"[-.]", p.name)[0].lower() for p in tree.iterdir()}
    assert {"puffin", "puffindb", "duckdb", "pyarrow", "pyiceberg", "sqlglot", "numpy", "sqlalchemy", "psycopg2"} <= names
    assert not names & set(NOT_IN_TREE)


def _env(tmp: Path, function: str) -> dict[str, str]:
    """The function's environment: the Dockerfile's ENV (its /tmp here under ``tmp``) and what
    Lambda sets; nothing of this process's (the interpreter ignores PYTHON* anyway: -I)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
           "AWS_LAMBDA_FUNCTION_NAME": function, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1769"}
    env.update({k: v for k, v in os.environ.items() if k.startswith("OPENBLAS_")})  # this CPU's OpenBLAS settings
    for ins, args in instructions(DOCKERFILE.read_text()):
        if ins == "ENV":
            for word in shlex.split(args):
                k, _, v = word.partition("=")
                env[k] = re.sub(r"^/tmp", str(tmp), v)
    return env


# runs in the isolated interpreter: checks what it can import, then calls the handler on each event
RUNNER = r"""
import importlib.util, json, sys
doc = json.loads(sys.stdin.read())
out = {"sys_path": sys.path, "flags": [sys.flags.isolated, sys.flags.no_site],
       "importable": [m for m in doc["absent"] if importlib.util.find_spec(m) is not None]}
import puffin.lambda_bridge.handler as h
import duckdb, pyarrow, pyiceberg, puffin, sqlalchemy, psycopg2
sqlalchemy.create_engine("postgresql+psycopg2://u@localhost/catalog")  # the SQL catalog's driver loads
out["files"] = {m.__name__: m.__file__ for m in (puffin, duckdb, pyarrow, pyiceberg, sqlalchemy, psycopg2)}
fn = getattr(h, doc["handler"])
out["responses"] = [fn(e, None) for e in doc["events"]]
out["loaded"] = sorted({m.split(".")[0] for m in sys.modules} & set(doc["absent"]))
with open(doc["out"], "w") as f:
    json.dump(out, f)
"""


def run_in_tree(tree: Path, tmp: Path, handler: str, events: list[dict]) -> list[dict]:
    """Call ``handler`` on ``events`` in one function process built from ``tree``; the responses."""
    (tmp / "tmp").mkdir(exist_ok=True)
    out = tmp / "out.json"
    doc = {"events": events, "handler": handler, "absent": list(NOT_IN_TREE), "out": str(out)}
    r = package.isolated_python(str(tree), RUNNER, input=json.dumps(doc), capture_output=True, text=True,
                                env=_env(tmp / "tmp", f"puffin-{handler}"), timeout=180)
    assert r.returncode == 0, r.stderr[-4000:]
    got = json.loads(out.read_text())
    assert got["flags"] == [1, 1]
    assert got["sys_path"][0] == os.path.abspath(tree)
    assert not [p for p in got["sys_path"][1:] if "-packages" in p]  # no site- or dist-packages
    if sys.prefix != sys.base_prefix:  # nothing of this virtual environment either
        assert not [p for p in got["sys_path"] if os.path.realpath(p).startswith(os.path.realpath(sys.prefix))]
    assert got["importable"] == [] and got["loaded"] == []
    for name, path in got["files"].items():
        assert os.path.realpath(path).startswith(os.path.realpath(tree)), (name, path)
    return got["responses"]


def test_engine_handler_runs_from_the_tree(tree, tmp_path):
    path = tmp_path / "events.parquet"
    pq.write_table(pa.concat_tables([events_table(0), events_table(1)]), path, row_group_size=1000)
    con = puffin.connect(target_partitions=2, prestart=False)  # planning only: no Ray
    con.register("events", str(path))
    rows = "SELECT id, grp, v * 2 AS w, upper(grp) || '-' || id AS tag FROM events WHERE id % 7 = 3"
    agg = "SELECT grp, count(*) AS n, sum(v) AS s FROM events WHERE id % 3 = 0 GROUP BY grp"
    frs = {sql: scan_fragments(con, sql) for sql in (rows, agg)}
    # the requests the invoker sends (reply inline: RequestResponse), all to one function instance
    events = [wire.fragment_request(f, f"q-{i}", 0, "sync", None) for i, sql in enumerate(frs) for f in frs[sql]]
    responses = run_in_tree(tree, tmp_path, "handler", events)
    assert all(r["ok"] and r["puffin"] == wire.VERSION and "inline" in r for r in responses), responses
    assert [r["cold"] for r in responses] == [True] + [False] * (len(responses) - 1)
    out = {sql: [] for sql in frs}
    for query, resp in zip([q for q in frs for _ in frs[q]], responses):
        out[query] += [wire.read_ipc(base64.b64decode(b)) for b in resp["inline"]]
    db = duckdb.connect()
    db.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet('{path}')")
    want = db.sql(rows).to_arrow_table()
    got = pa.concat_tables(out[rows])
    assert got.num_rows == want.num_rows > 0
    assert got.sort_by("id").equals(want.sort_by("id"))
    # the aggregate's scan fragments return partial counts and sums per group: add them up
    partial = pa.concat_tables(p.rename_columns(["grp", "n", "s"]) for p in out[agg])
    done = {r["grp"]: (r["n_sum"], r["s_sum"]) for r in partial.group_by("grp").aggregate(
        [("n", "sum"), ("s", "sum")]).to_pylist()}
    assert done == {g: (n, s) for g, n, s in db.sql(agg).fetchall()}


class _RestCatalog(http.server.BaseHTTPRequestHandler):
    """The two calls of the Iceberg REST protocol that loading a table makes (GET config, GET
    table), answered from a table's metadata file."""

    tables: ClassVar[dict[str, str]] = {}

    def do_GET(self):
        if self.path.split("?")[0] == "/v1/config":
            body = {"defaults": {}, "overrides": {}}
        elif m := re.fullmatch(r"/v1/namespaces/([^/]+)/tables/([^/?]+)", self.path):
            location = self.tables.get(f"{m[1]}.{m[2]}")
            if location is None:
                self.send_error(404)
                return
            body = {"metadata-location": location, "config": {},
                    "metadata": json.loads(Path(location.removeprefix("file://")).read_text())}
        else:
            self.send_error(404)
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("kind", ["rest", "sql"])
def test_catalog_handler_runs_from_the_tree(tree, tmp_path, kind):
    """The Catalog function plans a table's files from a REST catalog and from a SQL one (here on
    SQLite; the tree has SQLAlchemy and psycopg2 for PostgreSQL)."""
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.expressions import GreaterThanOrEqual

    cat = SqlCatalog("lake", uri=f"sqlite:///{tmp_path}/cat.db", warehouse=f"file://{tmp_path}/wh")
    cat.create_namespace("db")
    tbl = cat.create_table("db.t", schema=pa.schema([("id", pa.int64()), ("k", pa.string())]))
    for start in (0, 100, 200):  # three appends: three data files
        tbl.append(pa.table({"id": pa.array(range(start, start + 100), pa.int64()),
                             "k": [f"k{i % 5}" for i in range(start, start + 100)]}))
    tbl = cat.load_table("db.t")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RestCatalog)
    _RestCatalog.tables = {"db.t": tbl.metadata_location}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = ({"type": "rest", "uri": f"http://127.0.0.1:{server.server_address[1]}"} if kind == "rest" else
                  {"type": "sql", "uri": f"sqlite:///{tmp_path}/cat.db", "warehouse": f"file://{tmp_path}/wh"})
        flt = GreaterThanOrEqual("id", 150)
        events = [{"puffin": wire.VERSION, "kind": "catalog", "catalog": "lake", "config": config, "table": "db.t",
                   "snapshot_id": None, "filter": wire.pack_object(f) if f is not None else None, "s3": None,
                   "query_id": "catalog", "results": None} for f in (None, flt)]
        responses = run_in_tree(tree, tmp_path, "catalog_handler", events)
    finally:
        server.shutdown()
    for resp, f in zip(responses, (None, flt)):
        assert resp["ok"] and resp["snapshot_id"] == tbl.metadata.current_snapshot_id
        want = sorted(t.file.file_path for t in (tbl.scan(row_filter=f) if f else tbl.scan()).plan_files())
        assert sorted(x["path"] for x in resp["files"]) == want
        units = wire.unpack_object(resp["units"])
        assert sorted(u.path for u in units) == want and all(u.task is not None for u in units)
    assert len(responses[0]["files"]) == 3 and sum(x["records"] for x in responses[0]["files"]) == 300
    assert len(responses[1]["files"]) == 2  # the first file's ids are all < 150
