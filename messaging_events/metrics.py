"""Prometheus metrics of the workers, and how both the workers and the bridge serve theirs (prometheus-client).

The workers run a prefork pool, so each pool child writes its samples to files under
PROMETHEUS_MULTIPROC_DIR (prometheus-client's multiprocess mode, chosen by `config.celery_app` before
anything imports prometheus-client) and the worker's main process serves the sum over every child on
WORKER_METRICS_PORT. The bridge is one process: its metrics (`messaging_events/bridge/metrics.py`) live in
the default registry and are served on BRIDGE_METRICS_PORT. Label values are bounded: an event type the
contract does not know is counted as `unknown`, never by the name a job happened to carry.
"""

import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, multiprocess, start_http_server

from messaging_events.contract.routing import event_type_from_name

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# --- workers --------------------------------------------------------------------------------------
EVENTS_PROCESSED = Counter(
    "crm_events_processed_total",
    "Events a worker finished, by outcome (the inbox status, `duplicate` or `transient`)",
    ["event_type", "outcome"],
)
EVENT_APPLY_SECONDS = Histogram(
    "crm_event_apply_seconds",
    "Time to claim, apply and record one event",
    ["event_type"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)


def type_label(name: str) -> str:
    event_type = event_type_from_name(name or "")
    return event_type.value if event_type else "unknown"


def record_event(event_type: str, outcome: str, seconds: float | None = None) -> None:
    label = type_label(event_type)
    EVENTS_PROCESSED.labels(label, outcome).inc()
    if seconds is not None:
        EVENT_APPLY_SECONDS.labels(label).observe(seconds)


def serve_metrics(port: int) -> None:
    """`/metrics` on `port`: this process's registry, or in a worker the sum over every pool child's files."""
    start_http_server(port, addr=os.environ.get("METRICS_ADDR", "0.0.0.0"), registry=_registry())  # noqa: S104


def _registry() -> CollectorRegistry:
    if not os.environ.get(MULTIPROC_ENV):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry
