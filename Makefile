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

.PHONY: help setup book test unit notebooks-smoke notebooks-workshop html lint lock lab clean browser weights clot-reader cxr-reader ctpa-collection latent-classifier

help:
	@echo "make book   set up, run every notebook (workshop profile), build _build/html"
	@echo "make test   set up, unit tests, run every notebook (smoke profile), build the book"
	@echo "make lab    JupyterLab on the book's environment: notebooks/*.py open as notebooks"
	@echo "make weights [PROFILE=workshop] [SCHEDULE=long]  train the shipped bundle weights/PROFILE"
	@echo "make latent-classifier [PROFILE=workshop]  pretrain the latent PE classifier on the collection"
	@echo "make ctpa-collection [PROFILE=workshop]  build the book's RSPECT: simulated CT-only patients"
	@echo "make clot-reader [PROFILE=workshop]  pretrain chapter 8's clot reader weights/PROFILE-clot-reader"
	@echo "make cxr-reader [PROFILE=workshop]   pretrain chapter 8's X-ray reader weights/PROFILE-cxr-reader"

setup: .venv/.ready

.venv/.ready: $(LOCK) pyproject.toml Makefile
	@if [ ! -f $(VENV)/.complete ]; then \
	  echo ">> building the environment $(VENV) from $(LOCK) (first time only; a few GB)"; \
	  rm -rf $(VENV) && $(PYTHON) -m venv $(VENV) && \
	  $(VENV)/bin/python -m pip install -q uv==$(UV_VERSION) && \
	  $(VENV)/bin/uv pip sync -q --python $(VENV)/bin/python $(LOCK) && \
	  touch $(VENV)/.complete; \
	else echo ">> reusing $(VENV)"; fi
	@# Bytecode compiled once: with PYTHONDONTWRITEBYTECODE set Python never caches it, and
	@# every process (each notebook kernel, each CLI call) recompiled torch and MONAI.
	@if [ ! -f $(VENV)/.compiled ]; then \
	  echo ">> compiling the environment's bytecode (first time only)"; \
	  $(VENV)/bin/python -m compileall -q -j 0 $(VENV)/lib/python3.11/site-packages >/dev/null; \
	  touch $(VENV)/.compiled; \
	fi
	@# A thin per-checkout venv sees the cached packages and installs this checkout's code.
	rm -rf .venv && $(PYTHON) -m venv --without-pip .venv
	echo "import site; site.addsitedir('$(VENV)/lib/python3.11/site-packages')" \
	  > .venv/lib/python3.11/site-packages/_xr2ct_cached_env.pth
	$(VENV)/bin/uv pip install -q --python $(PY) --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3" >/dev/null
	@# JupyterLab run from the thin venv finds the cached environment's lab assets, extensions
	@# and server config (jupytext's contents manager) here; its python3 kernel stays this venv.
	mkdir -p .venv/etc .venv/share/jupyter/lab/settings
	ln -sfn $(VENV)/etc/jupyter .venv/etc/jupyter
	ln -sfn $(VENV)/share/jupyter/labextensions .venv/share/jupyter/labextensions
	for d in schemas static themes; do ln -sfn $(VENV)/share/jupyter/lab/$$d .venv/share/jupyter/lab/$$d; done
	@# a double click opens a .py (python document) with jupytext's notebook view
	$(VENV)/bin/jupytext-config --settings-file .venv/share/jupyter/lab/settings/overrides.json \
	  set-default-viewer python
	touch .venv/.ready

lock:
	$(VENV)/bin/uv pip compile requirements.in -o $(LOCK) --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 --no-header --generate-hashes
	@# the venv whose uv compiled the lock: a sub-make would key VENV by the new lock's hash
	$(MAKE) lock-platforms VENV=$(VENV)

# Workshop laptops: one lock per platform, resolved with the Linux lock's versions as
# constraints, so every package they share is pinned alike; they differ only in what a
# platform needs (no CUDA packages or triton off Linux: torch from PyPI runs on the CPU, or
# MPS on Apple silicon). torch 2.14.1 has macOS wheels for 14.0 and later only.
# `make check-locks` resolves them again (needs PyPI) and fails if a committed lock differs.
PLATFORM_LOCKS := macos-arm64:aarch64-apple-darwin windows-x86_64:x86_64-pc-windows-msvc
LOCK_DIR ?= .
lock-platforms:
	mkdir -p _build
	grep -E '^[A-Za-z0-9_.-]+==' $(LOCK) | sed 's/ \\$$//; s/ ;.*//' > _build/linux-pins.txt
	for spec in $(PLATFORM_LOCKS); do name=$${spec%%:*}; platform=$${spec#*:}; \
	  MACOSX_DEPLOYMENT_TARGET=14.0 $(VENV)/bin/uv pip compile requirements.in \
	    -c _build/linux-pins.txt -o $(LOCK_DIR)/requirements-$$name.lock --python-version 3.11 \
	    --python-platform $$platform --no-header --no-annotate --generate-hashes -q || exit 1; \
	done

check-locks:
	rm -rf _build/locks && mkdir -p _build/locks
	$(MAKE) lock-platforms LOCK_DIR=_build/locks
	for spec in $(PLATFORM_LOCKS); do name=$${spec%%:*}; \
	  diff -q requirements-$$name.lock _build/locks/requirements-$$name.lock || exit 1; done
	@echo ">> the locks for macOS arm64 and Windows x86-64 resolve and match the committed ones"

# The model card README.md of every bundle under weights/, generated from its records
# (tests/test_model_cards.py checks that the committed cards agree with them): run it after
# make weights / clot-reader / cxr-reader or a new benchmark record.
.PHONY: model-cards lock-platforms check-locks
model-cards: setup
	$(PY) -m xr2ct_lib.models.card

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

# The reader-kit browser test drives Debian's Chromium through Playwright (never
# `playwright install`: it downloads browsers and fails offline). Installed with apt-get
# when missing; CI is a fresh Debian machine running as root.
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@if [ ! -x $(CHROMIUM) ]; then \
	  echo ">> installing Debian's chromium for the reader-kit browser test"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    chromium fonts-dejavu-core; \
	fi

test: setup browser lint unit notebooks-smoke html

# The shipped bundle: every network trained from scratch with the profile's long schedule
# (hours on a CPU for workshop). Resumable: run the same command again after a kill.
PROFILE ?= workshop
SCHEDULE ?= long
# pretrained as the paper's: uncond and DRR stages on the CTPA collection (the book's RSPECT,
# COLLECTION patients built with this run's VAE), the X-ray condition from the pretrained
# X-ray reader's trunk, the X-ray stage with the paper's whole objective
COLLECTION ?= $(if $(filter smoke,$(PROFILE)),200,2000)
weights: setup
	$(PY) -m xr2ct_lib.cli train --profile $(PROFILE) --schedule $(SCHEDULE) --out weights/$(PROFILE) \
	  --collection $(COLLECTION) --encoder reader --full-loss

# the book's RSPECT: extra simulated CT-only patients (latents, DRRs, records) for pretraining
ctpa-collection: setup
	$(PY) -m xr2ct_lib.cli build-collection --profile $(PROFILE)

# chapter 8's latent classifier, pretrained on the collection (Table 7's CTPA latent row)
latent-classifier: setup
	$(PY) -m xr2ct_lib.cli pretrain-latent-classifier --profile $(PROFILE)

# chapter 8's clot reader, pretrained on extra simulated CT-only patients
clot-reader: setup
	$(PY) -m xr2ct_lib.cli pretrain-clot-reader --profile $(PROFILE)

# chapter 8's X-ray reader, pretrained on extra simulated X-ray patients
cxr-reader: setup
	$(PY) -m xr2ct_lib.cli pretrain-cxr-reader --profile $(PROFILE)

book: setup notebooks-workshop html

# JupyterLab on this checkout's venv (kernel "Python 3"), opened in notebooks/, markdown
# rendered by jupyterlab-myst ({cite} roles); tests/test_lab_save.py saves in it with Ctrl+S.
# jupytext.toml pairs each notebooks/NN_*.py with an output-keeping _build/notebooks/NN_*.ipynb
# (as root, e.g. in a container, JupyterLab needs --allow-root); LAB_ARGS adds options
LAB_ARGS ?=
lab: setup
	$(PY) -m jupyterlab --ServerApp.root_dir=$(CURDIR) --LabApp.default_url=/lab/tree/notebooks \
	  $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

clean:
	rm -rf _build book/executed runs/smoke .venv
