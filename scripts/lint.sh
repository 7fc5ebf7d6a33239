#!/usr/bin/env bash
# `make lint`, and the first step of `make test`: ruff (with its complexity rules), the import contracts
# of pyproject.toml ([tool.importlinter], docs/architecture.md), then mypy ([tool.mypy]; docs/testing.md,
# "What make lint checks"). Provisions the virtualenv like `make test`, so it works from a fresh clone.
set -euo pipefail
source "$(dirname "$0")/stack.sh"

ensure_system_packages
ensure_venv requirements-dev.txt
cd "$ROOT"
log "ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
log "import contracts"
.venv/bin/lint-imports --no-logo --no-cache
log "mypy"
.venv/bin/mypy
