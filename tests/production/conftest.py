from tests.processes import broker_proxy, processes  # noqa: F401  (the fixtures, for this package)
