# The README's commands. Each creates or reuses .venv, so a fresh machine needs nothing else.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
LOG    ?= ./tasklog-data
TASKS  ?= 20000

.PHONY: demo test bench bench-full lint clean chromium screenshots

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The modules setup.py compiles with mypyc (tasklog/native.py's COMPILED, the one list): an edit of
# one builds them again; until then the package imports that module's source, with a warning.
COMPILED_SOURCES := $(addsuffix .py,$(shell sed -n 's/^COMPILED[^=]*= *(\(.*\))$$/\1/p' tasklog/native.py | tr -d '",' | tr . /))
BUILD_INPUTS := pyproject.toml setup.py tasklog/native.py $(COMPILED_SOURCES)

$(VENV)/.installed-%: $(BUILD_INPUTS) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[$*]'
	touch $@

$(VENV)/.installed-base: $(BUILD_INPUTS) | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

demo: $(VENV)/.installed-base
	$(BIN)/tasklog demo --log $(LOG) --tasks $(TASKS)

# The report's check and the dashboard's tests open pages in a real headless Chromium and drive it
# through its WebDriver (Debian's chromium and chromium-driver), installed when missing. A failed
# install does not stop the suite: the browser tests then fail alone, saying why.
chromium:
	@{ command -v chromium && command -v chromedriver; } >/dev/null || { s=""; [ "$$(id -u)" = 0 ] || s=sudo; \
	  $$s apt-get update -qq && $$s apt-get install -y -qq --no-install-recommends chromium chromium-driver \
	  >/dev/null; } || echo "make: could not install chromium and chromium-driver (apt-get); the browser tests will fail" >&2

# The README's pictures, remade from a demo log with a fixed seed (needs chromium, as the tests do).
SHOTS := bench/charts/screenshots
screenshots: $(VENV)/.installed-test chromium
	rm -rf $(SHOTS)/demo-log && mkdir -p $(SHOTS)
	cd $(SHOTS) && $(CURDIR)/$(BIN)/tasklog demo --log demo-log --tasks 2000 --seed 7 --projection none
	cd $(SHOTS) && $(CURDIR)/$(BIN)/tasklog report --log demo-log -o report.html
	cd $(SHOTS) && $(CURDIR)/$(BIN)/tasklog timeline --log demo-log -o timeline.json
	chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --virtual-time-budget=5000 \
	  --window-size=1060,1050 --screenshot=$(CURDIR)/$(SHOTS)/report.png file://$(CURDIR)/$(SHOTS)/report.html
	$(BIN)/python -m bench.dashboard_shots $(SHOTS)/demo-log $(SHOTS)
	rm -rf $(SHOTS)/demo-log $(SHOTS)/report.html

# The core's contract tests again on the pure-Python fallback (TASKLOG_PURE_PYTHON=1 imports the
# compiled modules' sources): validation and encoding, the stream index, the lifecycle, the fold
# and the dict projection's contract (about 25 s).
PURE_TESTS := tests/log/test_codec.py tests/log/test_stream_index.py tests/log/test_lifecycle.py \
              tests/projections/test_fold.py tests/projections/test_projection_dict.py

# compileall first: with PYTHONDONTWRITEBYTECODE set (as in our containers), every `python -m
# tasklog` a test starts compiled the package again, twice the time of the command itself.
# Three workers on two cores: ipyparallel's suites and the cluster and NATS tests wait on their
# servers much of the time (tests/conftest.py puts the cluster tests in groups).
test: $(VENV)/.installed-test chromium
	$(BIN)/python -m compileall -q tasklog projections tests bench >/dev/null
	$(BIN)/python -m pytest tests/ -q -n 3 --dist loadgroup
	TASKLOG_PURE_PYTHON=1 $(BIN)/python -m pytest -q -p no:cacheprovider $(PURE_TESTS)

bench: $(VENV)/.installed-bench
	$(BIN)/python -m bench.run --profile quick

bench-full: $(VENV)/.installed-bench
	$(BIN)/python -m bench.run --profile full

lint: $(VENV)/.installed-lint
	$(BIN)/ruff check tasklog projections tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .benchmarks tasklog-data
	rm -rf build *__mypyc*.so tasklog/*.so projections/*.so  # the compiled modules (setup.py)
