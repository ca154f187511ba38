# firepipe: every target builds .venv from nothing when it is missing (uv, from uv.lock) and is
# quick when it exists. Nothing is installed by hand.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
EXTRAS := --extra aws --extra lambda --extra spark --extra bench --extra dev
STAMP := $(VENV)/.synced

export FIREPIPE_HOME ?= $(CURDIR)/.firepipe
export DAGSTER_HOME := $(FIREPIPE_HOME)/dagster
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/$(VENV)
# dbt never reaches the internet: no usage statistics, no version check.
export DBT_SEND_ANONYMOUS_USAGE_STATS := false
export DBT_VERSION_CHECK := false

.PHONY: help venv home dbt-manifest run dev test synth bench lint format lock clean

help:
	@echo "make run    build the environment and run the end_to_end job locally, then summarise it"
	@echo "make test   build the environment and run the whole test suite"
	@echo "make dev    Dagster UI on http://127.0.0.1:3000"
	@echo "make dbt-manifest  dbt parse: the manifest the dbt assets are loaded from"
	@echo "make synth  synthesise the CDK app's templates for every environment into infra/cdk.out/"
	@echo "make bench  run the benchmarks (firepipe bench)"
	@echo "make lint   ruff check, ruff format --check, mypy on firepipe/core"

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# --compile-bytecode: every `firepipe` command and test process starts from compiled modules
# (measured: `firepipe history` 1.0 s instead of 3.2-3.7 s on two cores).
$(STAMP): pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --compile-bytecode $(EXTRAS) --python $(PYTHON)
	@touch $@

venv: $(STAMP)

# The CDK app is a project of its own (infra/pyproject.toml, infra/uv.lock) in infra/.venv: the
# CDK's runtime pins a typeguard that firepipe's environment must not be held to.
INFRA := infra
INFRA_STAMP := $(INFRA)/.venv/.synced
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20

$(INFRA_STAMP): $(INFRA)/pyproject.toml $(INFRA)/uv.lock | $(UV)
	UV_PROJECT_ENVIRONMENT=$(CURDIR)/$(INFRA)/.venv $(UV) sync --frozen --project $(INFRA) --python $(PYTHON)
	@touch $@

# The dbt assets are read from the manifest when the definitions load: `dbt parse` (offline,
# no database opened) rebuilds it whenever a file of the dbt project changes.
DBT_DIR := dbt
DBT_MANIFEST := $(DBT_DIR)/target/manifest.json
DBT_FILES := $(shell find $(DBT_DIR) \( -name target -o -name logs \) -prune -o -type f \( -name '*.sql' -o -name '*.yml' \) -print)

$(DBT_MANIFEST): $(STAMP) $(DBT_FILES)
	$(BIN)/dbt --no-use-colors parse --quiet --project-dir $(DBT_DIR) --profiles-dir $(DBT_DIR) --target local
	@touch $@

dbt-manifest: $(DBT_MANIFEST)

home: venv
	@$(BIN)/firepipe home >/dev/null

run: home $(DBT_MANIFEST)
	$(BIN)/firepipe seed
	$(BIN)/dagster job execute -m firepipe.definitions -j end_to_end
	@echo
	@$(BIN)/firepipe summary

dev: home $(DBT_MANIFEST)
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

test: venv $(DBT_MANIFEST) synth
	$(BIN)/pytest
	cd $(INFRA) && .venv/bin/pytest -q

# Every environment's templates, offline, into infra/cdk.out/ (cdk-nag's AwsSolutions checks on
# every stack: an unacknowledged error fails the synthesis).
synth: $(INFRA_STAMP)
	cd $(INFRA) && .venv/bin/python app.py

bench: venv
	$(BIN)/firepipe bench

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

lock: | $(UV)
	$(UV) lock --python $(PYTHON)
	$(UV) lock --project $(INFRA) --python $(PYTHON)

clean:
	rm -rf $(VENV) $(TOOLS) $(INFRA)/.venv $(INFRA)/cdk.out
