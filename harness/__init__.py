"""The one process harness of the tests and the benchmark (never imported by production code).

`harness.procfile` turns the Procfile's lines into argv, so a test or the bench runs what production
runs; `harness.process` starts a child in its own process group, waits for its ready line, and stops it
(SIGTERM, then SIGKILL of the whole group). tests/processes/ and bench/ build on these two modules.
"""
