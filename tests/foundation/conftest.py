from tests.processes import processes  # noqa: F401  (the fixture, for this package's process tests)
