# voicebot: make run | make demo | make test | make bench
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run demo test lint migrate clean bench bench-quick

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(PY) manage.py migrate --noinput

# Daphne's runserver: HTTP and the /media-stream WebSocket on one port.
run: migrate
	$(PY) manage.py runserver 127.0.0.1:8000

# The product's main job, offline: an emulated outbound call to a scripted callee who speaks from
# real recordings (README "Quick start"). Other callees: make demo DEMO_ARGS="--scenario asks-for-person"
demo: install
	$(PY) manage.py demo $(DEMO_ARGS)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# Benchmarks (not part of `make test`; BENCHMARKS.md records the results): 1. barge-in accuracy,
# 2. calls per process (about 25 min; needs PostgreSQL and Redis for all its setups), 3. pipeline overhead.
bench: install
	$(PY) -m bench.barge_in
	$(PY) -m bench.calls_per_process
	$(PY) -m bench.pipeline_overhead

# Smoke run of the benchmarks on a small subset (about a minute); writes under bench/results/quick/.
bench-quick: install
	$(PY) -m bench.barge_in --quick
	$(PY) -m bench.calls_per_process --quick
	$(PY) -m bench.pipeline_overhead --quick

lint: install
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
