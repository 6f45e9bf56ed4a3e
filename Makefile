# Two commands set everything up: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SOCKET ?= $(CURDIR)/run/socket
STAMP := $(VENV)/.installed

.PHONY: venv run test test-xen lint typecheck fuzz docs plots clean

venv: $(STAMP)

# setup.py and the C sources: the optional compiled node storage (store/nodebase.py) is
# built by this install, in place, and rebuilt when its source changes.
$(STAMP): pyproject.toml setup.py src/pyxenstored/store/_nodebase.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: venv
	@mkdir -p $(dir $(SOCKET))
	@echo "pyxenstored: serving $(SOCKET)"
	@echo "point the xenstore tools at it with:  export XENSTORED_PATH=$(SOCKET)"
	$(PY) -m pyxenstored -N --socket $(SOCKET)

lint: venv
	$(VENV)/bin/ruff check src tests benchmarks realxen
	$(VENV)/bin/ruff format --check --quiet src tests benchmarks realxen

# Two runs: to mypy, tests/liveupdate/ and benchmarks/liveupdate.py are one module name.
typecheck: venv
	$(VENV)/bin/mypy src/pyxenstored realxen benchmarks
	$(VENV)/bin/mypy tests

# Man pages pyxenstore(1) and pyxenstored(8), generated from the argument parsers.
docs: venv
	@mkdir -p man
	$(PY) -m pyxenstored.tool.manpage pyxenstored.tool.main:build_parser 1 > man/pyxenstore.1
	$(PY) -m pyxenstored.tool.manpage pyxenstored.cli:build_parser 8 > man/pyxenstored.8
	@echo "man pages in man/: man -l man/pyxenstore.1"

test: venv lint typecheck
	$(VENV)/bin/pytest -n 2 -q
	@echo "the store, core, state and transaction suites again, on pure Python node storage:"
	PYXENSTORED_PURE=1 $(VENV)/bin/pytest -n 2 -q tests/store tests/core tests/state tests/transactions

# Coverage-guided fuzzing of every input surface (tests/fuzz, issue 13): FUZZ_SECONDS per
# target; failing inputs land in run/fuzz/artifacts/. FUZZ_TARGETS narrows the run.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
fuzz: venv
	$(PY) -m pip install --quiet -e '.[test,fuzz]' || echo "atheris did not install: hypothesis-driven fuzzing"
	cd tests && ../$(PY) -m fuzz --seconds $(FUZZ_SECONDS) --work $(CURDIR)/run/fuzz $(FUZZ_TARGETS)

# PNG plots of pyxenstored beside C xenstored and oxenstored (benchmarks/plot.py, about
# 12 minutes: it runs compare.py sessions); matplotlib comes from the 'bench' extra.
# PLOT_ARGS="--from-json" redraws the committed JSON in benchmarks/plots/ without running.
PLOT_ARGS ?=
plots: venv
	$(PY) -m pip install --quiet -e '.[test,bench]'
	$(PY) benchmarks/plot.py $(PLOT_ARGS)

# Real Xen in QEMU (docs/real-xen.md): root and apt-get needed, skips with the reason elsewhere.
# DAEMON=cxenstored runs the same scenarios with Debian's C xenstored (the control run);
# SCENARIOS=smoke,devices narrows the run.
DAEMON ?= pyxenstored
SCENARIOS ?=
test-xen: venv
	PXS_DAEMON=$(DAEMON) PXS_SCENARIOS=$(SCENARIOS) $(VENV)/bin/pytest realxen -v -rs \
		-p no:cacheprovider -o timeout=1500

clean:
	rm -rf $(VENV) run man .pytest_cache .mypy_cache .ruff_cache
