#!/usr/bin/env bash
# `make mutation`: mutmut over the consent ledger, identity resolution, the inbox and the contract, one
# module at a time, each mutant judged by the test modules that exercise that module (fast tier, -x)
# against the test PostgreSQL and Redis. See docs/testing.md, "Mutation testing".
#
#   scripts/mutation.sh MODULE [run] [MUTANT_GLOB...]   MODULE: consent, identity, inbox, contract or all
#   scripts/mutation.sh MODULE results                  the module's survivors (and not checked ones)
#   scripts/mutation.sh MODULE show MUTANT_NAME         one mutant's diff
#
# MODULE picks [tool.mutmut.modules.MODULE] of pyproject.toml (its `only_mutate` and test selection)
# over the [tool.mutmut] defaults; mutmut itself reads only [tool.mutmut], so the overlay is applied by
# replacing its configuration reader before its command line runs. mutmut keeps its state in mutants/,
# and a change of test selection resets every result there, so each module's mutants/ is kept apart in
# .dev/mutation/MODULE and moved into place only while its command runs.
set -euo pipefail
cd "$(dirname "$0")/.."

modules=(consent identity inbox contract)
module="${1:-all}"
shift || true
if [[ "$module" == all ]]; then
  for each in "${modules[@]}"; do bash "$0" "$each" "$@"; done
  exit 0
fi
if [[ ! " ${modules[*]} " == *" $module "* ]]; then
  echo "usage: $0 {$(IFS='|'; echo "${modules[*]}")|all} [run [MUTANT_GLOB...] | results | show MUTANT_NAME]" >&2
  exit 2
fi
command="${1:-run}"
[[ $# -gt 0 ]] && shift

state_dir=".dev/mutation/$module"
if [[ -e mutants ]]; then
  echo "mutants/ exists: another mutation command is running here, or one was killed (move it to .dev/mutation/<module>)" >&2
  exit 1
fi
mkdir -p "$state_dir"
unpark_mutants() { if [[ -d "$state_dir/mutants" ]]; then mv "$state_dir/mutants" mutants; fi; }
park_mutants() { if [[ -d mutants ]]; then mv mutants "$state_dir/mutants"; fi; }

mutmut_as_module() {
  nice -n 19 python - "$module" "$@" <<'PY'
import sys
import tomllib
from pathlib import Path

import mutmut.configuration

module, *arguments = sys.argv[1:]
defaults = tomllib.loads(Path("pyproject.toml").read_text("utf-8"))["tool"]["mutmut"]
settings = {**defaults, **defaults["modules"][module]}
mutmut.configuration._config_reader = lambda: settings.get

from mutmut.__main__ import cli  # noqa: E402  (after the reader is replaced)

sys.argv = ["mutmut", *arguments]
cli()
PY
}

if [[ "$command" == run ]]; then
  export STACK_DIR="${STACK_DIR:-.dev/test}"
  export PG_PORT="${TEST_PG_PORT:-54339}"
  export REDIS_PORT="${TEST_REDIS_PORT:-63809}"
  source scripts/stack.sh
  start_test_stack
  trap 'park_mutants; stop_redis; stop_postgres' EXIT
  unpark_mutants
  python -m pip install -q -r requirements-mutation.txt
  # One mutant at a time: every pytest run shares the one test database.
  mutmut_as_module run --max-children 1 "$@"
  mutmut_as_module results
else
  trap park_mutants EXIT
  unpark_mutants
  export PATH="$PWD/.venv/bin:$PATH" DJANGO_SETTINGS_MODULE=config.settings.test
  mutmut_as_module "$command" "$@"
fi
