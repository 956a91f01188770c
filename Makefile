.PHONY: install demo test lint check-sf1

install:
	python3 -m venv .venv && .venv/bin/pip install -e '.[dev]'

demo:
	.venv/bin/python -m puffin.demo

test:
	.venv/bin/python -m pytest

lint:
	.venv/bin/ruff check puffin tests

check-sf1:
	.venv/bin/python -m puffin.tpch_check --sf 1
