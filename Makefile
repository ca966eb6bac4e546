# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
export MAMMO_HOME ?= $(CURDIR)/data

export DAGSTER_HOME ?= $(MAMMO_HOME)/dagster

.PHONY: install demo dev label browser services orthanc test test-fast lint format bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[all]'
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)  ## create .venv and install the project with every extra

demo: $(STAMP)  ## generate a small synthetic archive and run the pipeline on it
	$(BIN)/mammo demo

dev: $(STAMP)  ## Dagster UI on http://127.0.0.1:3000 + labeler on :5001 (Ctrl-C stops both)
	$(BIN)/mammo dev

label: $(STAMP)  ## only the labeler, on http://127.0.0.1:5001
	$(BIN)/mammo label

# The browser tests drive Debian's Chromium through Playwright.
browser:
	@command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends chromium; }

# The scale-out test starts Redis (Debian's redis-server) and two Celery workers itself,
# on loopback, and stops them when it ends, pass or fail.
services:
	@command -v redis-server >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends redis-server; }

# The PACS tests start Debian's Orthanc with its DICOMweb plugin themselves, on a free
# loopback port with their own config and storage, and stop it when they end.
orthanc:
	@test -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends orthanc orthanc-dicomweb; }

test: $(STAMP) lint browser services orthanc  ## the whole suite, slow end-to-end tests included (what CI runs)
	$(BIN)/python -m pytest

test-fast: $(STAMP) orthanc  ## skip the slow end-to-end tests (the PACS tests still start Orthanc)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check mammo_dagster labeler tests benchmarks
	$(BIN)/ruff format --check mammo_dagster labeler tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format mammo_dagster labeler tests benchmarks
	$(BIN)/ruff check --fix mammo_dagster labeler tests benchmarks

bench: $(STAMP) browser services orthanc  ## every benchmark; each writes its page in docs/benchmarks/
	$(BIN)/python benchmarks/bench_thumbnails.py
	$(BIN)/python benchmarks/bench_thumbnails.py --oversample 0 --cases hologic/j2k ge/j2k hologic/explicit
	$(BIN)/python benchmarks/bench_ingest.py
	$(BIN)/python benchmarks/bench_labeler.py
	$(BIN)/python benchmarks/bench_inference.py
	$(BIN)/python benchmarks/bench_predict.py
	$(BIN)/python benchmarks/bench_training.py
	$(BIN)/python benchmarks/bench_robustness.py
	$(BIN)/python benchmarks/bench_mag_flip.py
	$(BIN)/python benchmarks/bench_thresholds.py
	$(BIN)/python benchmarks/bench_active_learning.py
	$(BIN)/python benchmarks/bench_scale.py
	$(BIN)/python benchmarks/bench_pacs.py
	$(BIN)/python benchmarks/bench_pacs.py --size full --studies 2
	$(BIN)/python benchmarks/bench_gradcam.py
	$(BIN)/python benchmarks/bench_hostile.py

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache
