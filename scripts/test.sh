#!/usr/bin/env bash
# `make test`: provision everything, start a PostgreSQL and a Redis of its own
# (separate ports and data from `make up`), run pytest, stop them, exit with pytest's status.
set -euo pipefail
export STACK_DIR="${STACK_DIR:-.dev/test}"
export PG_PORT="${TEST_PG_PORT:-54339}"
export REDIS_PORT="${TEST_REDIS_PORT:-63809}"
source "$(dirname "$0")/stack.sh"

ensure_system_packages
ensure_venv requirements-dev.txt
ensure_node_modules
ensure_chromium
start_postgres
start_redis
trap 'stop_redis; stop_postgres' EXIT
eval "$(stack_env)"
export DJANGO_SETTINGS_MODULE=config.settings.test
export PATH="$ROOT/.venv/bin:$PATH"
cd "$ROOT"
set +e
python -m pytest "$@"
status=$?
set -e
exit "$status"
