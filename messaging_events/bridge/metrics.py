"""The bridge's Prometheus metrics, served on BRIDGE_METRICS_PORT (see `messaging_events.metrics`)."""

from prometheus_client import Counter, Gauge, Histogram

BRIDGE_JOBS_RECEIVED = Counter(
    "crm_bridge_jobs_received_total", "BullMQ jobs handed to the bridge", ["event_type", "priority"]
)
BRIDGE_JOBS_PUBLISHED = Counter(
    "crm_bridge_jobs_published_total", "Jobs whose Celery message Redis accepted", ["event_type", "priority"]
)
BRIDGE_JOBS_REJECTED = Counter(
    "crm_bridge_jobs_rejected_total", "Jobs the contract rejected (forwarded as rejections)", ["event_type", "priority"]
)
BRIDGE_BATCH_SIZE = Histogram(
    "crm_bridge_batch_size", "Jobs per published Celery message", ["queue"], buckets=(1, 2, 4, 8, 16, 32, 64, 128)
)
BRIDGE_PUBLISH_SECONDS = Histogram(
    "crm_bridge_publish_seconds",
    "Time for one successful publish of a batch to the Celery broker",
    ["queue"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
BRIDGE_PUBLISH_RETRIES = Counter("crm_bridge_publish_retries_total", "Failed publish attempts, retried", ["queue"])
BRIDGE_REDIS_CONNECTED = Gauge("crm_bridge_redis_connected", "1 while the bridge reaches this Redis", ["redis"])
BULLMQ_WAITING = Gauge("crm_bullmq_waiting_jobs", "Jobs waiting in the BullMQ queue (sampled by the bridge)")
BULLMQ_OLDEST_WAITING_AGE = Gauge(
    "crm_bullmq_oldest_waiting_age_seconds", "Age of the oldest waiting BullMQ job: the pipeline's lag"
)
