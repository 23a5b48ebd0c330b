# One command runs the service, one runs the tests; both install what they need first.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
# checkov pins its own boto3, so it lives in an environment of its own, from tools/checkov.txt (uv pip compile of
# tools/checkov.in).
CHECKOV := $(TOOLS)/checkov/bin/checkov
# The OpenAI JavaScript SDK the docs' Node examples use (tools/js/package-lock.json); only where npm exists.
JS_SDK := tools/js/node_modules/openai/package.json
# The test targets run the tests in parallel (pytest-xdist), a test file's tests on one worker, on one worker more
# than the machine has cores: many files spend most of their time waiting (a 61 s generation, webhook retries, held
# streams, local stacks answering) while the others compute. tests/conftest.py hands the files out so that about one
# worker waits while two compute (make test 222-233 s, was 242-253 s with the slowest files first). On 2 cores 3
# workers beat 2 (make check 52-54 s against 59 s, measured back to back); 4 did no better than 3 (247.6 s, in the old order).
# TEST_WORKERS sets the count (0: in this process, one test after another).
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))
# pytest keeps the test modules it rewrites (its assertion messages) as bytecode, unless PYTHONDONTWRITEBYTECODE is
# set, as it is on some machines: then every worker rewrites all of them again on every run (~5 s of CPU each).
PYTEST := PYTHONDONTWRITEBYTECODE= $(VENV)/bin/python -m pytest --dist loadfile --no-loadscope-reorder -n $(TEST_WORKERS)
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: bytecode openapi help install run loadtest smoke test check test-unit test-integration test-template test-e2e lint bench requirements build package clean

help:
	@echo "make run     serve the API on http://127.0.0.1:$${PORT:-3000}/v1 (embedded S3 + upstream simulator)"
	@echo "make test    the whole suite: lint + unit, template, integration, end-to-end and package tests"
	@echo "make check   the inner loop: lint + unit, template and integration tests but the slow ones"
	@echo "make bench   the generations handler against a naive one: overhead, memory, cold start, layer size"
	@echo "make package the deploy artifact (.aws-sam/build) for linux/arm64 python3.13, no Docker needed"
	@echo "make smoke  BASE_URL=... API_KEY=...: a black-box check of a deployment (docs/first-deployment.md)"

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet "uv==$(UV_VERSION)"

# Installed packages come with their bytecode (--compile-bytecode): every process the tests start imports them
# from it, even where PYTHONDONTWRITEBYTECODE keeps Python from writing any.
$(VENV)/.synced: $(UV) pyproject.toml uv.lock layers/imagecore/pyproject.toml
	$(UV) sync --frozen --all-groups --compile-bytecode
	@touch $@

$(CHECKOV): $(UV) tools/checkov.txt
	$(UV) venv -q --allow-existing --python $(PYTHON) $(TOOLS)/checkov
	VIRTUAL_ENV=$(TOOLS)/checkov $(UV) pip sync -q --compile-bytecode tools/checkov.txt
	@touch $@

$(JS_SDK): tools/js/package-lock.json
	@if command -v npm >/dev/null; then npm ci --prefix tools/js --no-audit --no-fund --silent && touch $@; \
	else echo "no npm: the docs' Node examples will be skipped by the tests" >&2; fi

install: $(VENV)/.synced $(CHECKOV) $(JS_SDK)

run: install bytecode
	$(VENV)/bin/python -m local

# About a minute of bounded overload against a local stack it starts with tight limits (loopback only).
loadtest: install
	PYTHONPATH=. $(VENV)/bin/python scripts/loadtest.py

# The project's own sources are compiled too before a run (only what changed since the last one is compiled).
SOURCES := layers functions local tests bench scripts
bytecode: install
	@$(VENV)/bin/python -m compileall -q -j 0 $(SOURCES) >/dev/null

test: install lint bytecode
	$(PYTEST)

# The inner loop: what make test runs but the end-to-end and package tests and those marked slow (checkov,
# cfn-lint, sam validate, the traced interpreter, the local stack's start-up checks).
check: install lint bytecode
	$(PYTEST) -m "not slow" tests/unit tests/template tests/integration

test-unit: install
	$(PYTEST) tests/unit

test-integration: install
	$(PYTEST) tests/integration

test-template: install
	$(PYTEST) tests/template

test-e2e: install
	$(PYTEST) tests/e2e

# ruff (style, security, complexity), vulture (dead code, see vulture_whitelist.py), mypy (types).
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/vulture
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: package
	$(VENV)/bin/python -m bench

# What `sam deploy` uploads, for linux/arm64 cp313 from wheels (no Docker, no python3.13): .aws-sam/build.
package: install
	$(VENV)/bin/python scripts/package.py

# The layer's requirements.txt is what `sam build` installs; it is exported from uv.lock, never edited.
requirements: install
	$(UV) export --frozen --package imagecore --no-emit-package imagecore --no-hashes --no-header \
		--no-annotate --no-dev -o layers/imagecore/requirements.txt >/dev/null

build: install
	$(VENV)/bin/sam build

clean:
	rm -rf $(VENV) $(TOOLS) .aws-sam .pytest_cache .ruff_cache

# The merged OpenAPI document the health function serves; a test fails when it is stale.
openapi: install
	$(VENV)/bin/python -m imagecore.edge.openapi

# A black-box check of a deployment (scripts/smoke.py): make smoke BASE_URL=https://.../prod/v1 API_KEY=...
# [LONG=1] [MAX_IMAGES=6] [ORIGIN=https://app.example.com]. The key goes through the environment, never echoed.
smoke: install
	@BASE_URL="$(BASE_URL)" API_KEY="$(API_KEY)" LONG="$(LONG)" MAX_IMAGES="$(MAX_IMAGES)" ORIGIN="$(ORIGIN)" \
		$(VENV)/bin/python scripts/smoke.py
