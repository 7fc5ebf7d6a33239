"""Safe Celery defaults: unlimited, logged broker reconnection; jittered event-task retries."""

import pytest
from django.conf import settings
from django.test import override_settings

from messaging_events.tasks import _retry_countdown
from tests.processes import Processes, TcpProxy, wait_until


def test_visibility_timeout_exceeds_the_longest_legitimate_hold() -> None:
    timeout = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    assert timeout == 600
    assert timeout > settings.CELERY_TASK_TIME_LIMIT + settings.EVENT_TASK_RETRY_BACKOFF_MAX_S


@override_settings(EVENT_TASK_RETRY_BACKOFF_MAX_S=60)
def test_retry_countdown_is_full_jitter_under_an_exponential_ceiling() -> None:
    for retries, ceiling in [(0, 2), (1, 4), (2, 8), (4, 32), (5, 60), (9, 60)]:
        # 3,000 draws: the chance that one of 61 values never comes up is below 1e-20.
        samples = {_retry_countdown(retries) for _ in range(3000)}
        assert min(samples) >= 0 and max(samples) <= ceiling, (retries, samples)
        # Spread over the whole range, not one fixed step: 0 and the ceiling both come up.
        assert {0, ceiling} <= samples, (retries, sorted(samples))


@pytest.mark.processes
def test_worker_keeps_retrying_the_broker_and_logs_each_attempt(processes: Processes) -> None:
    assert settings.CELERY_BROKER_CONNECTION_MAX_RETRIES is None
    proxy = TcpProxy.for_redis_url(settings.CELERY_BROKER_URL)
    try:
        proxy.down()
        worker = processes.start_worker(env={"CELERY_BROKER_URL": proxy.url}, concurrency=1, wait=False)
        # kombu's steps are 2 s, 4 s, 6 s…: two logged attempts, each saying there is no limit.
        wait_until(lambda: worker.output().count("Trying again") >= 2, 30, message=worker.tail)
        output = worker.output()
        assert f"Cannot connect to redis://:**@127.0.0.1:{proxy.port}/0" in output  # kombu masks the password
        assert "(1/None)" in output and "(2/None)" in output
        proxy.up()
        worker.wait_for_output(" ready.", 45)
        assert worker.alive
    finally:
        proxy.close()
