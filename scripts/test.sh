#!/usr/bin/env bash
# `make test`: provision everything, start a PostgreSQL and a Redis of its own
# (separate ports and data from `make up`), run pytest, stop them, exit with pytest's status.
set -euo pipefail
export STACK_DIR="${STACK_DIR:-.dev/test}"
export PG_PORT="${TEST_PG_PORT:-54339}"
export REDIS_PORT="${TEST_REDIS_PORT:-63809}"
source "$(dirname "$0")/stack.sh"

ensure_chromium
start_test_stack
set +e
python -m pytest "$@"
status=$?
set -e
exit "$status"
