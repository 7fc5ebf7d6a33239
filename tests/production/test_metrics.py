"""Prometheus `/metrics` on the real bridge and the real prefork worker: the counters move with the events."""

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.messaging_events.samples import contact_job, contact_payloads, message_job, message_payloads
from tests.processes import Processes, free_port, publish_jobs, wait_for_quiescence, wait_until

pytestmark = pytest.mark.processes


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape_when(port: int, name: str, expected: float, **labels: str) -> dict:
    """The samples, once `name{labels}` reads `expected` (metrics lag the inbox by a few milliseconds)."""
    return wait_until(
        lambda: value(samples := scrape(port), name, **labels) == expected and samples,
        10,
        message=lambda: str(scrape(port)),
    )


def answers(port: int) -> bool:
    try:
        scrape(port)
    except OSError:
        return False
    return True


def test_bridge_and_worker_metrics_count_what_happened(processes: Processes) -> None:
    bridge_port, worker_port = free_port(), free_port()
    processes.start_bridge(env={"BRIDGE_METRICS_PORT": str(bridge_port)}, wait=False)
    processes.start_worker(concurrency=2, env={"WORKER_METRICS_PORT": str(worker_port)}, wait=False)
    processes.wait_ready()
    wait_until(lambda: answers(bridge_port) and answers(worker_port), 15, message="both /metrics endpoints")

    created = [
        contact_job("contact.created", contact_payloads(contact=f"c-{i}", prefix=f"m{i}")["contact.created"])
        for i in range(3)
    ]
    bad_bounce = message_job("message.bounced", {**message_payloads()["message.bounced"], "bounceType": "??"})
    publish_jobs([*created, bad_bounce])
    wait_for_quiescence(30, min_inbox_rows=4)

    created_normal = {"event_type": "contact.created", "priority": "normal"}
    bridge = scrape_when(bridge_port, "crm_bridge_jobs_published_total", 3, **created_normal)
    assert value(bridge, "crm_bridge_jobs_received_total", event_type="contact.created", priority="normal") == 3
    assert value(bridge, "crm_bridge_jobs_rejected_total", event_type="message.bounced", priority="high") == 1
    assert value(bridge, "crm_bridge_jobs_published_total", event_type="message.bounced", priority="high") == 1
    assert value(bridge, "crm_bridge_batch_size_sum", queue="normal") == 3
    assert value(bridge, "crm_bridge_publish_seconds_count", queue="normal") >= 1
    assert value(bridge, "crm_bridge_redis_connected", redis="bullmq") == 1
    assert value(bridge, "crm_bridge_redis_connected", redis="broker") == 1

    # The worker's pool children count; the main process serves their sum.
    worker = scrape_when(worker_port, "crm_events_processed_total", 3, event_type="contact.created", outcome="applied")
    assert value(worker, "crm_events_processed_total", event_type="message.bounced", outcome="rejected") == 1
    assert value(worker, "crm_event_apply_seconds_count", event_type="contact.created") == 3
    assert value(worker, "crm_event_apply_seconds_sum", event_type="contact.created") > 0

    # A redelivered event is counted as a duplicate and changes nothing.
    publish_jobs(created[:1])

    def duplicates() -> float:
        samples = scrape(worker_port)
        return value(samples, "crm_events_processed_total", event_type="contact.created", outcome="duplicate")

    wait_until(lambda: duplicates() == 1, 20, message=lambda: str(scrape(worker_port)))


def test_bridge_metrics_show_a_broker_outage_and_the_backlog(processes: Processes, broker_proxy) -> None:
    port = free_port()
    broker_proxy.down()
    processes.start_bridge(
        env={
            "BRIDGE_METRICS_PORT": str(port),
            "CELERY_BROKER_URL": broker_proxy.url,
            "BRIDGE_CONCURRENCY": "1",
            "BRIDGE_STATS_INTERVAL_S": "0.5",
            "BRIDGE_CONNECTION_CHECK_S": "0.5",
        }
    )
    publish_jobs(
        [contact_job("contact.deleted", {"eventId": f"w{i}", "tenantId": "t", "contactId": f"c{i}"}) for i in range(5)]
    )

    # One job is held (concurrency 1) and retried; four wait in BullMQ, and the bridge says so.
    samples = wait_until(
        lambda: (
            (s := scrape(port))
            and value(s, "crm_bullmq_waiting_jobs") == 4
            and value(s, "crm_bridge_publish_retries_total", queue="normal") >= 2
            and value(s, "crm_bullmq_oldest_waiting_age_seconds") > 0
            and s
        ),
        20,
        message=lambda: str(scrape(port)),
    )
    assert value(samples, "crm_bridge_redis_connected", redis="broker") == 0
    assert value(samples, "crm_bridge_redis_connected", redis="bullmq") == 1
    assert value(samples, "crm_bridge_jobs_published_total", event_type="contact.deleted", priority="normal") == 0

    broker_proxy.up()

    def recovered() -> bool:
        s = scrape(port)
        published = value(s, "crm_bridge_jobs_published_total", event_type="contact.deleted", priority="normal")
        return published == 5 and value(s, "crm_bridge_redis_connected", redis="broker") == 1

    wait_until(recovered, 30, message=lambda: str(scrape(port)))
