"""Phase 9: `backfill_contacts` in bulk and row by row on emptied, grown tables (bench/backfill.py)."""

import logging

from bench import backfill, db
from bench.config import SIZES, log
from bench.context import Bench


def run(bench: Bench) -> None:
    record = bench.phase("backfill")
    db.truncate()
    logging.disable(logging.INFO)
    try:
        figures = backfill.measure(
            rows=SIZES["backfill_rows"],
            per_row_rows=SIZES["backfill_per_row_rows"],
            prefill_factor=SIZES["prefill_factor"],
            work=bench.work,
        )
    finally:
        logging.disable(logging.NOTSET)
    record.update(figures)
    for key in ("backfill_rows_per_s", "backfill_row_by_row_rows_per_s", "backfill_bulk_vs_row_by_row"):
        bench.results[key] = figures[key]
    log.info("  backfill: %s", figures)
