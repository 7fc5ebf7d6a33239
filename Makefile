# The two commands a newcomer needs: `make up` and `make test`. Each does its own set-up.
.PHONY: up test test-fast test-thorough mutation bench bench-quick lint fmt clean

up:
	bash scripts/up.sh

# The static checks first (scripts/lint.sh, about a minute), then the whole suite: CI runs exactly this.
test:
	bash scripts/lint.sh
	bash scripts/test.sh --durations=25

# Everything but the tests that start processes or are marked slow (docs/testing.md).
test-fast:
	bash scripts/test.sh -m "not processes and not slow" --durations=10

# The whole suite with the consent order property at 200 examples instead of 50 (docs/testing.md).
test-thorough:
	CONSENT_PROPERTY_EXAMPLES=200 bash scripts/test.sh --durations=25

# mutmut over consent, identity, the inbox and the contract (MODULE=inbox for one), each judged by the
# fast-tier tests of that module (docs/testing.md).
mutation:
	bash scripts/mutation.sh $(or $(MODULE),all)

bench:
	bash scripts/bench.sh

bench-quick:
	BENCH_QUICK=1 bash scripts/bench.sh

# ruff (with its complexity rules), the import contracts, mypy: scripts/lint.sh.
lint:
	bash scripts/lint.sh

fmt:
	.venv/bin/ruff check --fix . && .venv/bin/ruff format .

clean:
	rm -rf .dev .venv tests/node/node_modules bench/results
