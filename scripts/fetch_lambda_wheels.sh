#!/usr/bin/env bash
# The wheels the Lambda functions' tree is built from, for the functions' platform (CPython 3.11
# on Amazon Linux 2023 x86_64; puffin/lambda_bridge/package.py says which pip options that is):
# every wheel cluster/lambda/requirements.txt resolves to, plus Puffin's build backend
# ([build-system] requires in pyproject.toml), which pip needs to build Puffin itself in an
# isolated environment as the image build does. With them, `python -m puffin.lambda_bridge.package
# --wheels DIR` and tests/lambda_bridge/test_package_build.py build the tree offline.
#
# Idempotent: when the directory already resolves everything offline (a pip dry run with
# --no-index) it downloads nothing. CI runs it at install time, when the network is allowed.
#
# Environment: PUFFIN_VENV (default <repo>/.venv), PUFFIN_CACHE_DIR (default ~/.cache/puffin);
# the wheels go to $PUFFIN_CACHE_DIR/lambda-wheels, or to the first argument if given.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${PUFFIN_VENV:-$ROOT/.venv}"
CACHE="${PUFFIN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/puffin}"
DEST="${1:-$CACHE/lambda-wheels}"

cd "$ROOT"
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$VENV/bin/python" -m puffin.lambda_bridge.package --fetch-wheels "$DEST"
echo "[fetch_lambda_wheels] $(find "$DEST" -maxdepth 1 -name '*.whl' | wc -l) wheels, $(du -sh "$DEST" | cut -f1) in $DEST"
