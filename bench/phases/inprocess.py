"""Phase 5: the same kind of campaign applied in this process, per-event vs set-based (bench/inprocess.py); the
same for sign-ups and for re-applying parked events."""

import logging

from bench import inprocess
from bench.config import SIZES, log
from bench.context import Bench


def run(bench: Bench) -> None:
    record = bench.phase("inprocess")
    logging.disable(logging.INFO)  # the workers' per-event log lines, in this process
    try:
        figures = inprocess.compare(contacts=max(100, SIZES["contacts"] // 10), batch=32, repeats=3)
        signups = inprocess.signups(count=max(100, SIZES["contacts"] // 10), batch=32, repeats=3)
        unpark = inprocess.unpark(count=max(100, SIZES["contacts"] // 10), repeats=3)
    finally:
        logging.disable(logging.NOTSET)
    record.update(figures)
    record["signups"] = signups
    record["unpark"] = unpark
    bench.results["inprocess_unpark_per_event_ms_per_event"] = unpark["unpark_per_event_ms_per_event"]
    bench.results["inprocess_unpark_ms_per_event"] = unpark["unpark_ms_per_event"]
    bench.results["inprocess_signup_ms_per_event"] = signups["signup_ms_per_event"]
    bench.results["inprocess_signup_batched_ms_per_event"] = signups["signup_batched_ms_per_event"]
    bench.results["inprocess_per_event_ms_per_event"] = figures["per_event_ms_per_event"]
    bench.results["inprocess_set_based_ms_per_event"] = figures["set_based_ms_per_event"]
    bench.results["inprocess_set_based_speedup"] = figures["set_based_speedup"]
    log.info("  in-process: %s", figures)
