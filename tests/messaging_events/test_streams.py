"""The shared stream generator (messaging_events/streams): every shape it builds is one the contract accepts,
and the bench's streams hold the mix their parameters state, the same for the same seed and clock."""

from collections import Counter
from datetime import UTC, datetime

import pytest

from messaging_events.contract.jobs import Event, parse_job
from messaging_events.contract.routing import EventType
from messaging_events.streams import events, mixed
from messaging_events.streams.events import StreamJob

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def _judge(job: StreamJob, n: int = 0) -> object:
    return parse_job({"id": str(n), "name": job["name"], "data": job["data"], "timestamp": 1_790_000_000_000})


def test_every_type_built_from_its_fields_is_a_valid_event() -> None:
    values = {
        "message_id": "m1", "channel": "EMAIL", "bounce_type": "hard", "original_message_id": "m1",
        "reply_text": "STOP", "email": "a@example.com", "first_name": "Ann", "email_opt_in": True,
    }  # fmt: skip
    for event_type, fields in events.PAYLOAD_FIELDS.items():
        stated = {
            keyword: NOW if keyword.endswith("_at") else values.get(keyword)
            for keyword in fields
            if keyword not in {"event_id", "tenant_id", "contact_id"}
        }
        job = events.job(event_type, contact_id="c1", tenant_id="t1", event_id=f"e-{event_type}", **stated)
        judged = _judge(job)
        assert isinstance(judged, Event), (event_type, judged)
        assert judged.type == event_type and judged.idempotency_key == f"e-{event_type}"
        assert (judged.tenant_ref, judged.contact_id) == ("t1", "c1")
        assert judged.warnings == (), (event_type, judged.warnings)
        if event_type not in events.CONTACT_EVENTS:  # their time is the job's
            assert judged.occurred_at == NOW, event_type


def test_a_field_the_type_does_not_have_is_refused_and_none_is_left_out() -> None:
    with pytest.raises(TypeError, match=r"message\.delivered has no field"):
        events.job(EventType.MESSAGE_DELIVERED, contact_id="c1", message_id="m1", opened_at=NOW)
    job = events.job(EventType.EMAIL_OPENED, contact_id="c1", message_id="m1", opened_at=NOW, device_type=None)
    assert job["data"] == {
        "type": "email.opened",
        "identity": {"messagingContactId": "c1"},
        "payload": {"messageId": "m1", "openedAt": "2026-11-20T12:00:00Z"},
    }


def test_the_mixed_stream_holds_its_mix_and_every_job_is_valid() -> None:
    jobs = mixed.generate(2000, 4, tag="t", seed=3, now=NOW)
    assert jobs == mixed.generate(2000, 4, tag="t", seed=3, now=NOW)
    assert jobs != mixed.generate(2000, 4, tag="t", seed=4, now=NOW)
    counts = Counter(job["name"] for job in jobs)
    assert counts["contact.created"] == counts["message.sent"] == counts["message.delivered"] == 2000
    assert 500 <= counts["email.opened"] <= 700  # 30%
    assert 60 <= counts["email.clicked"] <= 140  # 5%
    assert 20 <= counts["message.bounced"] <= 60  # 2%
    assert 5 <= counts["message.failed"] <= 40  # 1%, after a delivery
    assert 0 < counts["sms.replied"] <= 40  # 1%
    judged = [_judge(job, n) for n, job in enumerate(jobs)]
    assert all(isinstance(j, Event) for j in judged), next(j for j in judged if not isinstance(j, Event))
    assert {j.tenant_ref for j in judged if isinstance(j, Event)} == {"", *(f"bench-tenant-{i}" for i in range(1, 5))}


def test_a_campaign_fails_instead_of_delivering_and_opens_some_messages_twice() -> None:
    contacts = mixed.contacts_of(2000, 4, "k")
    jobs = mixed.campaign(contacts, tag="k", now=NOW)
    counts = Counter(job["name"] for job in jobs)
    assert counts["message.sent"] == counts["message.delivered"] + counts["message.failed"] == 2000
    assert counts["message.failed"] > 0 and "contact.created" not in counts
    opens = Counter(job["data"]["payload"]["messageId"] for job in jobs if job["name"] == "email.opened")
    assert set(opens.values()) == {1, 2}
