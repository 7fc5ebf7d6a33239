"""The demo stream: deterministic, every event type in both shapes, duplicates, reorderings, malformed jobs."""

from collections import Counter
from io import StringIO

import pytest
from django.core.management import call_command

from messaging_events.contract.jobs import Event, Rejection, parse_job
from messaging_events.contract.routing import EventType
from messaging_events.streams.demo import OFFSET_KEY, bulk_specs, demo_jobs
from tests.ops.conftest import bullmq_queue, run


def _judge(jobs: list[dict]) -> list[Event | Rejection]:
    specs = bulk_specs(jobs, now_ms=1_790_000_000_000)
    return [
        parse_job(
            {
                "id": str(n),
                "name": s["name"],
                "data": s["data"],
                "timestamp": s["opts"].get("timestamp", 1_790_000_000_000),
            }
        )
        for n, s in enumerate(specs)
    ]


def test_same_seed_same_stream() -> None:
    assert demo_jobs(contacts=20, seed=3) == demo_jobs(contacts=20, seed=3)
    assert demo_jobs(contacts=20, seed=3) != demo_jobs(contacts=20, seed=4)


def test_stream_covers_the_contract() -> None:
    jobs = demo_jobs()
    judged = _judge(jobs)
    events = [j for j in judged if isinstance(j, Event)]
    rejections = [j for j in judged if isinstance(j, Rejection)]

    assert 200 <= len(jobs) <= 800
    assert {e.type for e in events} == set(EventType)
    assert len({e.tenant_ref for e in events if e.tenant_ref}) == 3
    # Both shapes.
    assert any("identity" in j["data"] for j in jobs if isinstance(j["data"], dict))
    assert any(set(j["data"]) == {"payload"} for j in jobs if isinstance(j["data"], dict))
    assert any(isinstance(j["data"], dict) and "tenantId" in j["data"] for j in jobs)
    assert any(j["name"].startswith("messaging.") for j in jobs)
    # A few malformed jobs, each rejected for a reason.
    assert 3 <= len(rejections) <= 10
    assert all(r.reason for r in rejections)
    # Duplicates: identities seen more than once, by eventId and by content hash.
    keys = Counter(e.idempotency_key for e in events)
    duplicated = [k for k, n in keys.items() if n > 1]
    assert any(k.startswith("demo-evt-") for k in duplicated)
    assert any(k.startswith("sha256:") for k in duplicated)


def test_reorderings() -> None:
    jobs = demo_jobs()
    contact_0 = [
        j
        for j in jobs
        if isinstance(j["data"], dict) and j["data"].get("payload", {}).get("contactId") == "demo-contact-00000"
    ]
    names = [j["name"] for j in contact_0]
    # A preference change published before the contact it concerns, yet stamped after it.
    assert names.index("contactPreference.updated") < names.index("contact.created")
    pref = next(j for j in contact_0 if j["name"] == "contactPreference.updated")
    created = next(j for j in contact_0 if j["name"] == "contact.created")
    assert pref[OFFSET_KEY] > created[OFFSET_KEY]
    # A follow-up (bounce, failure or delivery) published before its message.sent.
    by_message: dict[str, list[str]] = {}
    for job in jobs:
        data = job["data"] if isinstance(job["data"], dict) else {}
        message_id = data.get("payload", {}).get("messageId")
        if message_id and "identity" in data:
            by_message.setdefault(message_id, []).append(job["name"])
    assert any(names[0] != "message.sent" and "message.sent" in names for names in by_message.values())
    assert any(names[0] == "message.bounced" for names in by_message.values())


@pytest.mark.django_db
def test_command_publishes_with_the_queue_api(bullmq_redis) -> None:
    out = StringIO()
    call_command("publish_demo_events", "--contacts", "10", "--seed", "1", stdout=out)
    expected = len(demo_jobs(contacts=10, seed=1))
    assert f"published {expected} jobs" in out.getvalue()

    async def counts():
        queue = bullmq_queue()
        try:
            return await queue.getJobCounts("waiting"), await queue.getJobs(["waiting"], 0, 0, True)
        finally:
            await queue.close()

    waiting, oldest = run(counts())
    assert waiting == {"waiting": expected}
    assert oldest[0].name and oldest[0].timestamp > 0
