from tests.processes import broker_proxy, processes  # noqa: F401  (fixtures for the process tests)
