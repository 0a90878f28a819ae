# Strata: `make demo` runs the whole product locally on a fake tenant;
# `make test` runs every check CI runs. Both install what they need.

SHELL := /bin/bash
VENV  := .venv
PIP   := $(VENV)/bin/pip
CARGO ?= cargo
# The Python tools, pinned to a major version (from PyPI, into .venv).
PY_TOOLS := 'moto[server]>=5.1,<6' 'cfn-lint>=1.20,<2'

.PHONY: demo test bench dev fire lint fmt clippy cfn-lint unit venv clean

$(VENV)/.installed: Makefile
	@command -v python3 >/dev/null || { echo "python3 is needed (3.9+) to run the AWS emulator (moto)"; exit 1; }
	@test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check $(PY_TOOLS)
	@touch $@

venv: $(VENV)/.installed

## demo: build, start the local stack and a fake Microsoft 365 tenant, run the product, print what it did
demo: venv
	$(CARGO) run --quiet -p strata-e2e --bin demo

## test: formatting, clippy, the SAM template lint, every test
test: venv fmt clippy cfn-lint unit

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets --quiet -- -D warnings

cfn-lint: venv
	$(VENV)/bin/cfn-lint infra/template.yaml

unit: venv
	$(CARGO) test --workspace --quiet

## bench: the backup benchmark through the local stack; one `name: value unit` per line (docs/BENCHMARKS.md)
bench: venv
	$(CARGO) run --quiet --profile bench -p strata-e2e --bin bench

## dev: the local stack with the API on 127.0.0.1:8787 and the schedules on their timetable
dev: venv
	$(CARGO) run -p strata-local -- up --api-port 8787 --schedules

## fire SCHEDULE=DiscoverySchedule: fire a schedule of a running `make dev`
fire:
	$(CARGO) run --quiet -p strata-local -- fire $(or $(SCHEDULE),DiscoverySchedule)

clean:
	rm -rf $(VENV) .strata-local
	$(CARGO) clean
