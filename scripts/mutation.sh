#!/usr/bin/env bash
# `make mutation`: mutmut over the consent ledger, identity resolution, the inbox and the contract,
# each mutant judged by the fast tier (no process or slow tests) against the test PostgreSQL and Redis.
# Arguments go to `mutmut run` (e.g. a mutant name glob to try a few); `mutmut results` lists survivors.
set -euo pipefail
export STACK_DIR="${STACK_DIR:-.dev/test}"
export PG_PORT="${TEST_PG_PORT:-54339}"
export REDIS_PORT="${TEST_REDIS_PORT:-63809}"
source "$(dirname "$0")/stack.sh"

start_test_stack
python -m pip install -q -r requirements-mutation.txt
# One mutant at a time: every pytest run shares the one test database.
mutmut run --max-children 1 "$@"
mutmut results
