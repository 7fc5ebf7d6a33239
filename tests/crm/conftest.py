"""Tiers (docs/testing.md): modules of this package that are slow although they start no process."""

import pytest

from tests.processes import processes  # noqa: F401  (the fixture, for this package's process tests)

# The order-independence properties run hundreds of generated streams through the real handlers; the
# backfill differential test imports three generated files row by row as its reference.
SLOW_MODULES = {
    "test_order_independence.py",
    "test_order_independence_consent.py",
    "test_backfill_differential.py",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
