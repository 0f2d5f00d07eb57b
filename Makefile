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

# Benchmarks (not part of `make test`; BENCHMARKS.md records the results). Part 1: barge-in.
bench: install
	$(PY) -m bench.barge_in

# Smoke run of the benchmarks on a small subset (seconds); writes under bench/results/quick/.
bench-quick: install
	$(PY) -m bench.barge_in --quick

lint: install
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
