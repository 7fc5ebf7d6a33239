"""Oversized jobs: the bridge forwards a bounded rejection record instead of the data."""

from types import SimpleNamespace

from django.test import override_settings

from messaging_events.bridge.runner import OVERSIZED_PREVIEW_CHARS, bridged_job
from messaging_events.contract.jobs import OVERSIZED_MARKER, Event, Rejection, identity_of, parse_job
from tests.messaging_events.samples import contact_job, contact_payloads


def fake_job(name: str, data: object) -> SimpleNamespace:
    return SimpleNamespace(id="5", name=name, timestamp=1765699200000, attemptsMade=0, data=data)


@override_settings(PHONE_DEFAULT_REGION="ZA")
def test_oversized_payload_becomes_a_rejection_record() -> None:
    payload = {**contact_payloads()["contact.created"], "notes": "x" * 5000}
    job = contact_job("contact.created", payload)
    bridged = bridged_job(fake_job(job["name"], job["data"]), max_bytes=4096)
    assert bridged["rejection"].startswith("job data is ")
    assert "the limit is 4096 (BRIDGE_MAX_JOB_BYTES)" in bridged["rejection"]
    assert bridged["key"] == "evt_123" == identity_of("contact.created", job["data"])
    preview = bridged["data"][OVERSIZED_MARKER]
    assert preview["bytes"] > 5000
    assert len(preview["head"]) == OVERSIZED_PREVIEW_CHARS
    parsed = parse_job(bridged)
    assert isinstance(parsed, Rejection)
    assert parsed.reason == bridged["rejection"]
    assert parsed.idempotency_key == "evt_123"


def test_job_within_the_limit_travels_whole() -> None:
    job = contact_job("contact.deleted", contact_payloads()["contact.deleted"])
    bridged = bridged_job(fake_job(job["name"], job["data"]), max_bytes=4096)
    assert "rejection" not in bridged
    assert bridged == {
        "id": "5",
        "name": "contact.deleted",
        "timestamp": 1765699200000,
        "attemptsMade": 0,
        "data": job["data"],
    }
    assert isinstance(parse_job(bridged), Event)


def test_oversized_without_event_id_keys_on_the_full_content() -> None:
    data = {"payload": {"blob": "y" * 10_000}}
    bridged = bridged_job(fake_job("no.such.type", data), max_bytes=1000)
    assert bridged["key"] == identity_of("no.such.type", data, 1765699200000)  # a rejection: with its job time
    other = bridged_job(fake_job("no.such.type", {"payload": {"blob": "y" * 10_000 + "z"}}), max_bytes=1000)
    assert other["key"] != bridged["key"]
