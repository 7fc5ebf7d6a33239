"""Time limits never acknowledge unrecorded events (docs/decisions.md).

A batch of contact.created events goes through the real bridge to a real worker with a tiny time
limit. The test holds the advisory lock of one contact (as a slow concurrent writer would), so the
handler of that event blocks until the limit fires. Every event must still end recorded, once.
"""

import time

import pytest
from django.db import connection

from crm.models import ContactLink
from crm.services.locks import _key
from messaging_events.models import InboundEvent
from tests.messaging_events.samples import contact_job
from tests.processes import Processes, publish_jobs, wait_for_quiescence, wait_until

pytestmark = [pytest.mark.processes, pytest.mark.timeout(240)]

CONTACTS = [f"tl-c{i}" for i in range(6)]
SLOW_CONTACT = CONTACTS[2]
LOCK_HELD_S = 5


def _jobs() -> list[dict]:
    return [
        contact_job(
            "contact.created",
            {
                "eventId": contact,
                "tenantId": "t-limits",
                "contactId": contact,
                "email": f"{contact}@example.com",
            },
        )
        for contact in CONTACTS
    ]


@pytest.mark.parametrize(
    ("soft_s", "hard_s"),
    [
        pytest.param("1", "30", id="soft-limit-retries-the-unfinished"),
        pytest.param("0", "2", id="hard-limit-requeues"),  # 0: no soft limit
    ],
)
def test_a_batch_that_hits_its_time_limit_loses_no_event(processes: Processes, soft_s: str, hard_s: str) -> None:
    # The publisher's task options travel in the message headers: the bridge and the worker share them.
    limits = {"CELERY_TASK_SOFT_TIME_LIMIT": soft_s, "CELERY_TASK_TIME_LIMIT": hard_s}
    worker = processes.start_worker(concurrency=1, env=limits, wait=False)
    processes.start_bridge(
        env={"BRIDGE_BATCH_SIZE": str(len(CONTACTS)), "BRIDGE_LINGER_MS": "1000", **limits}, wait=False
    )
    processes.wait_ready()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s)", [_key(f"contact:{SLOW_CONTACT}")])
    try:
        publish_jobs(_jobs())
        worker.wait_for_output("Soft time limit" if soft_s != "0" else "Hard time limit", timeout=30)
        time.sleep(LOCK_HELD_S)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock_all()")

    wait_until(lambda: InboundEvent.objects.filter(status="applied").count() == len(CONTACTS), 120)
    wait_for_quiescence(timeout=60)
    rows = InboundEvent.objects.all()
    assert sorted(rows.values_list("idempotency_key", "status")) == [(c, "applied") for c in CONTACTS]
    assert set(rows.values_list("attempts", flat=True)) == {1}  # rolled back attempts are not counted
    assert sorted(ContactLink.objects.values_list("messaging_contact_id", flat=True)) == CONTACTS
