#!/usr/bin/env bash
# `make bench` / `make bench-quick` (BENCH_QUICK=1): provision everything like `make test`, start a
# PostgreSQL and a Redis of the bench's own (own ports and data under .dev/bench), run bench/run.py,
# stop every process it started and both servers. Results: a table, and bench/results/latest.json.
#
#   BENCH_PG_STATS=1   load pg_stat_statements in the bench PostgreSQL (for profiling; small overhead)
set -euo pipefail
export STACK_DIR="${BENCH_STACK_DIR:-.dev/bench}"
export PG_PORT="${BENCH_PG_PORT:-54349}"
export REDIS_PORT="${BENCH_REDIS_PORT:-63819}"
export PG_DB=crm_bench
source "$(dirname "$0")/stack.sh"

ensure_system_packages
ensure_venv requirements-dev.txt
ensure_node_modules

PID_FILE="$STACK_DIR/bench.pids"
cleanup() {
  trap '' INT TERM PIPE  # finish the clean-up even if the terminal or a pipe went away
  # Only the process groups bench/run.py started (it records their ids), then the two servers.
  if [ -f "$PID_FILE" ]; then
    while read -r pid; do
      [ -n "$pid" ] && kill -KILL -- "-$pid" 2>/dev/null || true
    done <"$PID_FILE"
    rm -f "$PID_FILE"
  fi
  stop_redis
  stop_postgres
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$STACK_DIR"
rm -f "$PID_FILE"
start_postgres
start_redis

psql_admin() { "$(pg_tool psql)" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qtAc "$1"; }
preload="$(psql_admin "SHOW shared_preload_libraries")"
if [ "${BENCH_PG_STATS:-0}" = 1 ] && [[ "$preload" != *pg_stat_statements* ]]; then
  psql_admin "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'"
  stop_postgres && start_postgres
elif [ "${BENCH_PG_STATS:-0}" != 1 ] && [[ "$preload" == *pg_stat_statements* ]]; then
  psql_admin "ALTER SYSTEM RESET shared_preload_libraries"
  stop_postgres && start_postgres
fi

eval "$(stack_env)"
# Production-like: DEBUG off (Django would otherwise keep every query in memory).
export DJANGO_SETTINGS_MODULE=config.settings.local DJANGO_DEBUG=false
export PATH="$ROOT/.venv/bin:$PATH"
cd "$ROOT"
python -m bench.run "$@"
