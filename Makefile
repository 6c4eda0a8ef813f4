# xr2ct: `make book` (main job) and `make test`. Both set up the environment from nothing.
SHELL := /bin/bash
PYTHON ?= python3
LOCK := requirements.lock
LOCK_HASH := $(shell sha256sum $(LOCK) | cut -c1-16)
# The venv lives outside the checkout, keyed by the lock's hash, so fresh clones reuse it.
VENV_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/xr2ct
VENV := $(VENV_CACHE)/venv-$(LOCK_HASH)
PY := .venv/bin/python
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.py))
UV_VERSION := 0.13.9

.PHONY: help setup book test unit notebooks-smoke notebooks-workshop html lint lock clean weights

help:
	@echo "make book   set up, run every notebook (workshop profile), build _build/html"
	@echo "make test   set up, unit tests, run every notebook (smoke profile), build the book"
	@echo "make weights [PROFILE=workshop] [SCHEDULE=long]  train the shipped bundle weights/PROFILE"

setup: .venv/.ready

.venv/.ready: $(LOCK) pyproject.toml
	@if [ ! -f $(VENV)/.complete ]; then \
	  echo ">> building the environment $(VENV) from $(LOCK) (first time only; a few GB)"; \
	  rm -rf $(VENV) && $(PYTHON) -m venv $(VENV) && \
	  $(VENV)/bin/python -m pip install -q uv==$(UV_VERSION) && \
	  $(VENV)/bin/uv pip sync -q --python $(VENV)/bin/python $(LOCK) && \
	  touch $(VENV)/.complete; \
	else echo ">> reusing $(VENV)"; fi
	@# A thin per-checkout venv sees the cached packages and installs this checkout's code.
	rm -rf .venv && $(PYTHON) -m venv --without-pip .venv
	echo "import site; site.addsitedir('$(VENV)/lib/python3.11/site-packages')" \
	  > .venv/lib/python3.11/site-packages/_xr2ct_cached_env.pth
	$(VENV)/bin/uv pip install -q --python $(PY) --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (xr2ct)" >/dev/null
	touch .venv/.ready

lock:
	$(VENV)/bin/uv pip compile requirements.in -o $(LOCK) --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 --no-header --generate-hashes

lint: setup
	$(PY) -m ruff check xr2ct_lib tests notebooks
	$(PY) -m ruff format --check xr2ct_lib tests notebooks

unit: setup
	$(PY) -m pytest -q

# explicit targets: GNU make skips pattern rules for .PHONY targets
notebooks-smoke notebooks-workshop: notebooks-%: setup
	$(PY) -m xr2ct_lib.cli run-notebooks --profile $*

html: setup
	rm -rf _build/html
	$(PY) -c "from jupyter_book.cli.main import main; main()" build . -W --keep-going

test: setup lint unit notebooks-smoke html

# The shipped bundle: every network trained from scratch with the profile's long schedule
# (hours on a CPU for workshop). Resumable: run the same command again after a kill.
PROFILE ?= workshop
SCHEDULE ?= long
weights: setup
	$(PY) -m xr2ct_lib.cli train --profile $(PROFILE) --schedule $(SCHEDULE) --out weights/$(PROFILE)

book: setup notebooks-workshop html

clean:
	rm -rf _build book/executed runs/smoke .venv
