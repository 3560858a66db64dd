# Every target that needs Python depends on the virtual environment, so `make run` and
# `make test` work on a fresh clone with no step before them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
DATA ?= ./matcher-data

.DEFAULT_GOAL := help

.PHONY: help install run test bench bench-quality lint format clean proto proto-check screenshots

help: ## List every target
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install matcher (editable) with its dev extra

HTTP_ADDRESS ?= 127.0.0.1:8080

run: $(STAMP) ## Start the service on the embedded default (SQLite in ./matcher-data), web app on :8080
	@echo "matcher is installed in $(VENV), which is not on your PATH: run it as $(BIN)/matcher,"
	@echo "or activate the environment first (source $(BIN)/activate) and run matcher."
	@echo "In another terminal, a first API key: $(BIN)/matcher keys create --role admin --name ops --data $(DATA)"
	@echo "Web app and HTTP API: http://$(HTTP_ADDRESS)/ (described at http://$(HTTP_ADDRESS)/api/v1/openapi.json)"
	$(BIN)/matcher serve --data $(DATA) --http-address $(HTTP_ADDRESS)

test: $(STAMP) ## Run the test suite
	$(BIN)/python -m pytest -q

bench: $(BENCH_STAMP) ## Run the benchmarks (pytest-benchmark; writes bench/results/)
	$(BIN)/python -m pytest bench -q -p no:cacheprovider -p no:doctest --benchmark-columns=min,median,mean,ops,rounds

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench-quality: $(BENCH_STAMP) ## Detection-quality benchmark, issue 6 (~30 min; writes bench/results/quality.md)
	$(BIN)/python -m bench.quality -j 2

screenshots: $(STAMP) ## Regenerate docs/screenshots/: each web app page, desktop and phone, in headless Chromium
	$(BIN)/python -m tests.web.screenshots --out docs/screenshots

lint: $(STAMP) ## Lint with ruff, type-check with mypy, lint the contract with buf
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/buf lint

proto: $(STAMP) ## Generate matcher/v1 from proto/matcher/v1 (the generated code is committed)
	$(BIN)/python -m matcher._codegen

proto-check: $(STAMP) ## Fail if the committed generated code is stale
	$(BIN)/python -m matcher._codegen --check

format: $(STAMP) ## Format with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis .benchmarks
