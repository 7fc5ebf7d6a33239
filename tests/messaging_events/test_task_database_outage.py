"""The batch task when the database goes away part-way through a batch.

Found by the PostgreSQL-restart fault test: a batch whose first events committed (linking a contact)
and whose next events hit the outage scheduled the unpark with `on_commit`, which outside a
transaction runs at once and queries the database. Its OperationalError escaped the task before the
retry of the transient events, so Celery acknowledged them unrecorded: they were lost.
"""

from typing import Any

import pytest
from django.db import OperationalError
from django.test import override_settings

from crm.models import ContactLink
from messaging_events import handlers
from messaging_events.contract.routing import EventType
from messaging_events.models import InboundEvent
from messaging_events.services import batch_signups, parking
from messaging_events.tasks import apply_event_batch
from tests.factories import contact_created_job

# In autocommit, as in a worker: `on_commit` then runs its callback at once.
pytestmark = pytest.mark.django_db(transaction=True)


@override_settings(EVENT_TASK_MAX_RETRIES=3, EVENT_TASK_RETRY_BACKOFF_MAX_S=1)
def test_events_hitting_an_outage_after_a_linking_event_are_retried_not_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    real = handlers.HANDLERS[EventType.CONTACT_CREATED]
    down = {"handler": 1, "unpark": 1}

    def outage_for_second_contact(event, source_event_id):
        if event.contact_id == "c-late" and down["handler"]:
            down["handler"] -= 1
            raise OperationalError("terminating connection due to administrator command")
        return real(event, source_event_id)

    class InboxWhileDown:  # `InboundEvent` as `parking` sees it: still down when the unpark is scheduled
        class objects:
            @staticmethod
            def filter(**kwargs: Any) -> Any:
                if down["unpark"]:
                    down["unpark"] -= 1
                    raise OperationalError("the database system is shutting down")
                return InboundEvent.objects.filter(**kwargs)

    # The two sign-ups take the per-event path: a batch of two or more new ones is otherwise applied set-based.
    monkeypatch.setattr(batch_signups, "SET_BASED_SIGNUPS_MIN", 3)
    monkeypatch.setitem(handlers.HANDLERS, EventType.CONTACT_CREATED, outage_for_second_contact)
    monkeypatch.setattr(parking, "InboundEvent", InboxWhileDown)
    jobs: list[dict[str, Any]] = [
        contact_created_job(contact_id="c-early", event_id="early", email="early@example.com", phone=None),
        contact_created_job(contact_id="c-late", event_id="late", email="late@example.com", phone=None),
    ]

    result = apply_event_batch.apply(args=[jobs])

    assert result.successful(), result.traceback
    assert result.get() == {"applied": 1}  # the retry, which carried only the event that hit the outage
    rows = dict(InboundEvent.objects.values_list("idempotency_key", "status"))
    assert rows == {"early": "applied", "late": "applied"}
    assert set(InboundEvent.objects.values_list("deliveries", flat=True)) == {1}
    assert set(ContactLink.objects.values_list("messaging_contact_id", flat=True)) == {"c-early", "c-late"}
    assert down == {"handler": 0, "unpark": 0}
