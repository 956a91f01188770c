"""Build the Engine and Catalog functions' file tree from this repository, as the image does.

    python -m puffin.lambda_bridge.package --out build/lambda [--wheels DIR] [--no-compile]
    python -m puffin.lambda_bridge.package --fetch-wheels DIR

The tree is what ``cluster/lambda/Dockerfile`` installs on the image's Python path, with the
same two pip steps: the function's requirements (``cluster/lambda/requirements.txt``), then
Puffin itself from a copy of ``pyproject.toml``, ``README.md`` and ``puffin/`` with
``--no-deps`` (pip builds it with its declared build backend, in an isolated environment). Here
both go to ``--target OUT``, binary wheels only, for the functions' platform whatever machine
runs the command: CPython 3.11 on Amazon Linux 2023, x86_64, glibc 2.34. (Not the Lambda Python
3.11 base image's Amazon Linux 2: its glibc 2.26 is older than DuckDB 2's wheels, and current
pyarrow's and numpy's, require.) With ``--wheels`` pip reads that directory and nothing else
(no index, none of pip's configuration): ``--fetch-wheels DIR`` (or
``scripts/fetch_lambda_wheels.sh``) fills one beforehand, so the build itself needs no network.
Nothing else goes in: what a Lambda Python base image brings beside the function's packages
(``RUNTIME``: the runtime interface client, and boto3, which pyiceberg's Glue catalog imports)
belongs to the image, not to the tree; the engine handler and a REST catalog need neither.

The command prints the tree's size and, when this interpreter can run it (CPython 3.11 on Linux
x86_64 with glibc 2.34 or newer), runs the Dockerfile's own import check in an isolated
interpreter whose path is only the tree and the standard library.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile

from puffin.errors import PuffinError

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DOCKERFILE = "cluster/lambda/Dockerfile"
REQUIREMENTS = "cluster/lambda/requirements.txt"
SOURCES = ("pyproject.toml", "README.md", "puffin")  # what the Dockerfile copies to build Puffin from
# the functions' platform (kept equal to the Dockerfile's base image and the template's
# Architectures by tests/lambda_bridge/test_package_build.py)
BASE_IMAGE = "public.ecr.aws/lambda/provided:al2023"
PYTHON_VERSION = "3.11"
GLIBC = (2, 34)
ARCH = "x86_64"
RUNTIME = ("awslambdaric", "boto3")  # installed on the OS-only base by the image, as a Python base image has them
CHECK = "import puffin.lambda_bridge.handler as h; assert callable(h.handler) and callable(h.catalog_handler)"


def platform_args() -> list[str]:
    """pip's options for binary wheels that run on the functions' platform (pip does not widen a
    ``manylinux_2_X`` platform to older glibc versions by itself, so every one is named)."""
    tags = [f"manylinux_{GLIBC[0]}_{minor}_{ARCH}" for minor in range(GLIBC[1], 4, -1)] + [f"manylinux2014_{ARCH}"]
    out = ["--only-binary=:all:", "--implementation", "cp", "--python-version", PYTHON_VERSION]
    for tag in tags:
        out += ["--platform", tag]
    return out


def default_wheels_dir() -> str:
    """``$PUFFIN_CACHE_DIR/lambda-wheels`` (default ``~/.cache/puffin``), where the script puts them."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(os.environ.get("PUFFIN_CACHE_DIR") or os.path.join(base, "puffin"), "lambda-wheels")


def _pip(*args: str, wheels: str | None = None) -> subprocess.CompletedProcess:
    """pip in a subprocess; with ``wheels``, reading that directory and nothing else (no index,
    none of the user's pip configuration: its find-links, constraints or indexes), build
    environments included."""
    env = None
    if wheels is not None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_FIND_LINKS=os.path.abspath(wheels))
    cmd = [sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "-q"]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)


def _run_pip(what: str, *args: str, wheels: str | None = None) -> None:
    r = _pip(*args, wheels=wheels)
    if r.returncode != 0:
        hint = (f"\n(from the wheels in {wheels} only: bash scripts/fetch_lambda_wheels.sh, or --fetch-wheels "
                f"{wheels}, adds what is missing)") if wheels else ""
        raise PuffinError(f"{what} failed (pip exit {r.returncode}):\n{(r.stderr or r.stdout).strip()[-4000:]}{hint}")


def _repo(repo: str | None) -> str:
    repo = os.path.abspath(repo or REPO)
    if not os.path.exists(os.path.join(repo, REQUIREMENTS)):
        raise PuffinError(f"no {REQUIREMENTS} under {repo}: run from a checkout of the Puffin repository (--repo)")
    return repo


def build_requirements(repo: str | None = None) -> list[str]:
    """What pip needs to build Puffin itself (``[build-system] requires`` in pyproject.toml)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: pip's own copy of tomli
        from pip._vendor import tomli as tomllib

    with open(os.path.join(_repo(repo), "pyproject.toml"), "rb") as f:
        return list(tomllib.load(f)["build-system"]["requires"])


def _requirement_args(repo: str) -> list[str]:
    return ["-r", os.path.join(repo, REQUIREMENTS), *build_requirements(repo)]


def wheels_complete(wheels: str, repo: str | None = None) -> bool:
    """Whether ``wheels`` alone resolves the requirements and the build backend (a pip dry run, offline)."""
    repo = _repo(repo)
    if not os.path.isdir(wheels):
        return False
    with tempfile.TemporaryDirectory() as target:
        r = _pip("install", "--dry-run", "--ignore-installed", "--target", target, *platform_args(),
                 *_requirement_args(repo), wheels=wheels)
    return r.returncode == 0


def fetch_wheels(wheels: str, repo: str | None = None) -> bool:
    """Download every wheel the build needs into ``wheels``; False when they were all there already."""
    repo = _repo(repo)
    if wheels_complete(wheels, repo):
        return False
    os.makedirs(wheels, exist_ok=True)
    _run_pip("downloading the functions' wheels", "download", "-d", wheels, *platform_args(),
             *_requirement_args(repo))
    if not wheels_complete(wheels, repo):
        raise PuffinError(f"the wheels in {wheels} still do not resolve {REQUIREMENTS} offline")
    return True


def build(out: str, wheels: str | None = None, repo: str | None = None, compile: bool = True) -> dict:
    """Install the functions' tree into ``out`` (absent or empty); its size as ``{"bytes", "files", "top"}``."""
    repo = _repo(repo)
    if os.path.isdir(out) and os.listdir(out):
        raise PuffinError(f"{out} is not empty: give --out a new or empty directory")
    if wheels is not None and not os.path.isdir(wheels):
        raise PuffinError(f"no wheel directory {wheels}: run bash scripts/fetch_lambda_wheels.sh "
                          "(or python -m puffin.lambda_bridge.package --fetch-wheels DIR)")
    os.makedirs(out, exist_ok=True)
    common = ["install", "--target", out, "--no-cache-dir"] + ([] if compile else ["--no-compile"])
    # COPY cluster/lambda/requirements.txt ...; RUN pip install -r requirements.txt
    _run_pip(f"installing {REQUIREMENTS}", *common, *platform_args(), "-r", os.path.join(repo, REQUIREMENTS),
             wheels=wheels)
    # COPY pyproject.toml README.md puffin ...; RUN pip install --no-deps <that copy>
    with tempfile.TemporaryDirectory() as stage:
        src = os.path.join(stage, "puffin")
        os.makedirs(src)
        for name in SOURCES:
            path = os.path.join(repo, name)
            if os.path.isdir(path):
                shutil.copytree(path, os.path.join(src, name), ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(path, src)
        _run_pip("installing puffin", *common, "--no-deps", src, wheels=wheels)
    return tree_size(out)


def tree_size(root: str) -> dict:
    top: dict[str, int] = {}
    total = files = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            size = os.lstat(os.path.join(dirpath, name)).st_size
            total += size
            files += 1
            first = os.path.relpath(dirpath, root).split(os.sep)[0]
            key = name if first == "." else first
            top[key] = top.get(key, 0) + size
    return {"bytes": total, "files": files, "top": sorted(top.items(), key=lambda kv: -kv[1])}


def runs_here() -> str | None:
    """None when this interpreter can run the tree, else why not."""
    want = f"CPython {PYTHON_VERSION} on Linux {ARCH} with glibc >= {GLIBC[0]}.{GLIBC[1]}"
    libc, version = platform.libc_ver()
    glibc = tuple(int(x) for x in version.split(".")[:2]) if libc == "glibc" and version else (0, 0)
    here = (platform.python_implementation(), f"{sys.version_info[0]}.{sys.version_info[1]}", platform.system(),
            platform.machine(), glibc)
    if here[:4] == ("CPython", PYTHON_VERSION, "Linux", ARCH) and glibc >= GLIBC:
        return None
    return f"the tree is for {want}; this is {here[0]} {here[1]} on {here[2]} {here[3]} (glibc {glibc[0]}.{glibc[1]})"


def isolated_python(tree: str, code: str, **kwargs) -> subprocess.CompletedProcess:
    """``code`` in this interpreter without site-packages or the environment's Python variables
    (``-I -S``): its path is ``tree`` and the standard library, as on the function."""
    prologue = f"import sys; sys.path.insert(0, {os.path.abspath(tree)!r})\n"
    return subprocess.run([sys.executable, "-I", "-S", "-B", "-c", prologue + code], check=False, **kwargs)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m puffin.lambda_bridge.package", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="new or empty directory for the tree")
    p.add_argument("--wheels", help="build offline from the wheels in this directory only (see --fetch-wheels)")
    p.add_argument("--fetch-wheels", metavar="DIR", help="download the wheels the build needs into DIR (and build from them when --out is given)")
    p.add_argument("--no-compile", action="store_true", help="do not compile .pyc files (the image build does)")
    p.add_argument("--repo", help="the Puffin checkout to build from (default: the one holding this module)")
    args = p.parse_args(argv)
    try:
        if args.fetch_wheels:
            fetched = fetch_wheels(args.fetch_wheels, args.repo)
            print(f"{args.fetch_wheels}: {'downloaded' if fetched else 'already complete'}")
            if not args.out:
                return 0
        if not args.out:
            p.error("--out is required")
        size = build(args.out, args.wheels or args.fetch_wheels, args.repo, compile=not args.no_compile)
    except PuffinError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    top = ", ".join(f"{name} {_mb(n)}" for name, n in size["top"][:6])
    print(f"{args.out}: {_mb(size['bytes'])} in {size['files']:,} files ({top}, ...)")
    why = runs_here()
    if why:
        print(f"handler import not checked: {why}")
        return 0
    r = isolated_python(args.out, CHECK, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"error: the handler does not import from {args.out}:\n{r.stderr.strip()}", file=sys.stderr)
        return 1
    print("handler and catalog_handler import from the tree alone (no site-packages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
