"""A worker keeps its database connection from one batch to the next, as a web process keeps it between
requests (CONN_MAX_AGE): Celery's Django fix-up alone would open a new PostgreSQL session for every task
(config/celery_app.py). Counted with PostgreSQL's own statistics: `pg_stat_database.sessions`."""

import uuid

import pytest
from django.db import connection

from messaging_events.models import InboundEvent
from messaging_events.publishing import publish_batch
from tests.factories import email_opened_job
from tests.processes import Processes, wait_until

pytestmark = [pytest.mark.processes, pytest.mark.timeout(180)]

BATCHES = 24


def sessions_opened() -> int:
    """Sessions ever opened on the test database; a backend counts its own when it reports its statistics."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()[0]


def test_a_worker_runs_many_batches_on_the_same_database_sessions(processes: Processes) -> None:
    processes.start_worker()  # two pool children, each with at most one session of its own
    warmed = email_opened_job(contact_id="conn-warm", message_id="conn-m0", event_id="conn-e0")
    publish_batch([warmed], queue="normal", task_id=str(uuid.uuid4()))
    wait_until(lambda: InboundEvent.objects.filter(status="parked").count() == 1, 60)
    before = sessions_opened()

    for n in range(1, BATCHES + 1):
        job = email_opened_job(contact_id=f"conn-{n}", message_id=f"conn-m{n}", event_id=f"conn-e{n}")
        publish_batch([job], queue="normal", task_id=str(uuid.uuid4()))
        # One batch at a time, so that each is its own task in whichever child takes it.
        wait_until(lambda n=n: InboundEvent.objects.filter(status="parked").count() == n + 1, 60)

    # A new session per task would add at least BATCHES; the one left to each child, and the test's own
    # queries, add a handful at most.
    assert InboundEvent.objects.filter(status="parked").count() == BATCHES + 1
    assert sessions_opened() - before <= 4
