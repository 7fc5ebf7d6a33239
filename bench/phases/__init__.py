"""One module per bench phase; each phase is a function of the `Bench` context (bench/context.py)."""
