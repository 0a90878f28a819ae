# Strata: `make demo` runs the whole product locally on a fake tenant;
# `make test` runs every check CI runs. Both install what they need.

SHELL := /bin/bash
VENV  := .venv
PIP   := $(VENV)/bin/pip
CARGO ?= cargo
# The Python tools, pinned to a major version (from PyPI, into .venv).
PY_TOOLS := 'moto[server]>=5.1,<6' 'cfn-lint>=1.20,<2' 'aws-sam-cli>=1.140,<2' 'checkov>=3.2,<4'
# Packaging only: cargo-lambda (it brings zig, the cross-linker).
PKG_TOOLS := 'cargo-lambda>=1.8,<2'
# The functions' CPU: arm64 (the template's default) or x86_64.
ARCH ?= arm64
RUST_TARGET_arm64  := aarch64-unknown-linux-gnu
RUST_TARGET_x86_64 := x86_64-unknown-linux-gnu
# sam without telemetry, in a region (it validates offline).
SAM := SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} $(VENV)/bin/sam

.PHONY: demo test bench package dev fire lint fmt clippy cfn-lint sam-validate checkov unit venv clean

$(VENV)/.installed: Makefile
	@command -v python3 >/dev/null || { echo "python3 is needed (3.9+) to run the AWS emulator (moto)"; exit 1; }
	@test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(PIP) install --quiet --disable-pip-version-check $(PY_TOOLS)
	@touch $@

venv: $(VENV)/.installed

## demo: build, start the local stack and a fake Microsoft 365 tenant, run the product, print what it did
demo: venv
	$(CARGO) run --quiet -p strata-e2e --bin demo

## test: formatting, clippy, the template checks (cfn-lint, sam validate --lint, checkov), every test
test: venv fmt clippy cfn-lint sam-validate checkov unit

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets --quiet -- -D warnings

cfn-lint: venv
	$(VENV)/bin/cfn-lint infra/template.yaml

sam-validate: venv
	$(SAM) validate --lint --template-file infra/template.yaml

# Every finding is fixed or skipped in the template with a written reason.
checkov: venv
	$(VENV)/bin/checkov --quiet --compact --skip-download --framework cloudformation -f infra/template.yaml

$(VENV)/.package-installed: $(VENV)/.installed
	$(PIP) install --quiet --disable-pip-version-check $(PKG_TOOLS)
	@touch $@

## package ARCH=arm64|x86_64: `sam build` of every function with cargo-lambda into .aws-sam/build
package: $(VENV)/.package-installed
	@test -n "$(RUST_TARGET_$(ARCH))" || { echo "ARCH must be arm64 or x86_64, not '$(ARCH)'"; exit 1; }
	@rustup target list --installed 2>/dev/null | grep -qx '$(RUST_TARGET_$(ARCH))' || rustup target add $(RUST_TARGET_$(ARCH)) || { \
	  echo "Could not install the Rust target $(RUST_TARGET_$(ARCH)) for ARCH=$(ARCH)."; \
	  echo "Install it with 'rustup target add $(RUST_TARGET_$(ARCH))' where rustup can reach its server,"; \
	  echo "or build for this machine's CPU with 'make package ARCH=x86_64'."; exit 1; }
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(SAM) build --beta-features --template-file infra/template.yaml \
	  --build-dir .aws-sam/build --parameter-overrides Architecture=$(ARCH)
	@for f in .aws-sam/build/*Function/bootstrap; do ls -l "$$f"; done

unit: venv
	$(CARGO) test --workspace --quiet

## bench: the backup and recovery benchmarks through the local stack, the packaged functions' sizes and cold starts; one `name: value unit` per line (docs/BENCHMARKS.md)
# The functions are packaged for this machine's CPU so that their cold starts can be measured.
BENCH_ARCH := $(if $(filter aarch64 arm64,$(shell uname -m)),arm64,x86_64)
bench: venv
	$(MAKE) --no-print-directory package ARCH=$(BENCH_ARCH)
	$(CARGO) run --quiet --profile bench -p strata-e2e --bin bench
	$(CARGO) run --quiet --profile bench -p strata-e2e --bin recover_bench

## dev: the local stack with the API on 127.0.0.1:8787 and the schedules on their timetable
dev: venv
	$(CARGO) run -p strata-local -- up --api-port 8787 --schedules

## fire SCHEDULE=DiscoverySchedule: fire a schedule of a running `make dev`
fire:
	$(CARGO) run --quiet -p strata-local -- fire $(or $(SCHEDULE),DiscoverySchedule)

clean:
	rm -rf $(VENV) .strata-local
	$(CARGO) clean
