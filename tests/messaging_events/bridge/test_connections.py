"""Loud, retrying connections: the bridge and `bridge_status` against a Redis that is not there.

A closed port refuses at once, like a Redis that is down. The bridge must say so on every attempt
(masked URL, reason, next delay), keep its stats line coming with connected=false, and say when the
connection is back; `bridge_status` must report the refusal at once, not after bullmq's retries.
"""

import re
import socket
import subprocess
import sys
import time

import pytest
from django.conf import settings
from django.test import override_settings

from messaging_events.services.status import bridge_status_get
from tests.messaging_events.samples import contact_job
from tests.processes import (
    ROOT,
    Processes,
    TcpProxy,
    bullmq_counts,
    publish_jobs,
    subprocess_env,
    wait_until,
)

pytestmark = pytest.mark.processes

FAST_STATS = {"BRIDGE_STATS_INTERVAL_S": "0.5", "BRIDGE_CONNECTION_CHECK_S": "0.5", "BRIDGE_PUBLISH_RETRY_MAX_S": "2"}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


def lines(output: str, event: str) -> list[str]:
    return [line for line in output.splitlines() if f" {event} " in f"{line} "]


def test_bridge_logs_each_refused_connection_with_a_masked_url_and_keeps_its_stats_coming(
    processes: Processes,
) -> None:
    port = closed_port()
    url = f"redis://:hunter2@127.0.0.1:{port}/1"
    bridge = processes.start_bridge(env={**FAST_STATS, "BULLMQ_REDIS_URL": url}, wait=False)

    wait_until(lambda: len(lines(bridge.output(), "redis_connection_failed")) >= 4, 15, message=bridge.tail)
    wait_until(lambda: len(lines(bridge.output(), "bridge_stats")) >= 3, 10, message=bridge.tail)
    output = bridge.output()
    failures = lines(output, "redis_connection_failed")
    assert all(f"url=redis://:***@127.0.0.1:{port}/1" in line for line in failures), failures
    assert all('error="connection refused"' in line and "redis=bullmq" in line for line in failures), failures
    delays = [float(re.search(r"retry_in_s=([\d.]+)", line).group(1)) for line in failures]
    assert delays[:4] == [0.5, 1.0, 2.0, 2.0]  # backs off, capped at BRIDGE_PUBLISH_RETRY_MAX_S
    stats = lines(output, "bridge_stats")
    assert all("connected=false" in line and "bullmq_connected=false" in line for line in stats), stats
    assert "hunter2" not in output
    assert "bridge_started" not in output  # nothing pretends to consume
    assert bridge.stop() == 0  # SIGTERM still stops it cleanly during the outage
    assert "bridge_stopped published=0" in bridge.output()


def test_bridge_logs_an_outage_and_the_recovery_then_moves_jobs_again(processes: Processes) -> None:
    proxy = TcpProxy.for_redis_url(settings.BULLMQ_REDIS_URL)
    try:
        bridge = processes.start_bridge(env={**FAST_STATS, "BULLMQ_REDIS_URL": proxy.url})
        proxy.down()
        wait_until(lambda: lines(bridge.output(), "redis_connection_failed"), 10, message=bridge.tail)
        wait_until(
            lambda: any("connected=false" in line for line in lines(bridge.output(), "bridge_stats")),
            10,
            message=bridge.tail,
        )
        proxy.up()
        wait_until(lambda: lines(bridge.output(), "redis_connection_recovered"), 10, message=bridge.tail)
        recovered = lines(bridge.output(), "redis_connection_recovered")[0]
        assert "redis=bullmq" in recovered and f"url={proxy.url}" in recovered and "down_s=" in recovered
        wait_until(lambda: "connected=true" in lines(bridge.output(), "bridge_stats")[-1], 10, message=bridge.tail)

        publish_jobs([contact_job("contact.deleted", {"eventId": "after", "tenantId": "t", "contactId": "c"})])
        # bullmq's Worker reconnects by itself (redis-py retries, then runRetryDelay): the job completes.
        wait_until(lambda: bullmq_counts()["completed"] == 1, 60, message=lambda: f"{bullmq_counts()}\n{bridge.tail()}")
        assert bridge.alive
    finally:
        proxy.close()


@pytest.mark.parametrize("which", ["BULLMQ_REDIS_URL", "CELERY_BROKER_URL"])
def test_bridge_status_reports_connection_refused_at_once(which: str, transactional_db: None) -> None:
    url = f"redis://:hunter2@127.0.0.1:{closed_port()}/1"
    with override_settings(**{which: url}):
        started = time.monotonic()
        status = bridge_status_get()
        elapsed = time.monotonic() - started
    expected = f"at {url.replace('hunter2', '***')}: connection refused"
    assert [problem for problem in status.problems if expected in problem], status.problems
    assert elapsed < 3, f"bridge_status_get took {elapsed:.1f}s"  # not bullmq's retries, not a 10 s timeout

    # The command says the same and exits 1, without the password.
    done = subprocess.run(
        [sys.executable, "manage.py", "bridge_status"],
        cwd=ROOT,
        env=subprocess_env({which: url}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert expected in done.stdout
    assert "hunter2" not in done.stdout + done.stderr
