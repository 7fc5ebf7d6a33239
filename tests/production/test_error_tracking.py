"""Sentry reporting through a capturing transport: the inbox's catch-all and the bridge's publish failures
report the exception with the event's type and key (or the queue), and no email or phone number."""

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from messaging_events.bridge.batcher import Batcher
from messaging_events.error_tracking import init_error_tracking
from messaging_events.models import InboundEvent
from messaging_events.services import inbox
from tests.messaging_events.samples import contact_job, contact_payloads

EMAIL = "john@example.com"
PHONE = "+27821234567"
# The spellings a number or address may take once it has passed through code and messages.
PERSONAL = (EMAIL, "john", PHONE, "27821234567", "0821234567", "82 123 4567", "082 123 4567")


class CapturingTransport(Transport):
    def __init__(self) -> None:
        super().__init__()
        self.envelopes: list[Envelope] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)

    def events(self) -> list[dict[str, Any]]:
        return [event for envelope in self.envelopes if (event := envelope.get_event()) is not None]

    def raw(self) -> str:
        return "\n".join(envelope.serialize().decode(errors="replace") for envelope in self.envelopes)


@pytest.fixture
def sentry() -> Iterator[CapturingTransport]:
    transport = CapturingTransport()
    init_error_tracking("http://public@127.0.0.1:9/1", environment="test", transport=transport)
    try:
        yield transport
    finally:
        sentry_sdk.get_client().close()
        sentry_sdk.init()  # no DSN: reporting off again for the rest of the run


def assert_no_personal_data(transport: CapturingTransport) -> None:
    raw = transport.raw()
    leaked = [value for value in PERSONAL if value in raw]
    assert not leaked, f"personal data sent to Sentry: {leaked}"


@pytest.mark.django_db(transaction=True)
def test_a_handler_bug_is_reported_with_type_and_key_and_no_personal_data(
    sentry: CapturingTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_handler(event, source_event_id):
        email, phone = event.payload.email, event.payload.phoneNumber  # locals a report could carry
        raise ValueError(f"cannot file {email} / {phone} for {event.contact_id}")

    monkeypatch.setattr(inbox, "handler_for", lambda event_type: broken_handler)
    job = contact_job("contact.created", contact_payloads()["contact.created"])
    bridged = {"id": "1", "name": "contact.created", "timestamp": 1765699200000, "attemptsMade": 0, "data": job["data"]}
    status, _ = inbox.process_job(bridged)
    sentry_sdk.flush()

    assert status == "failed"
    assert InboundEvent.objects.get().status == "failed"
    events = sentry.events()
    assert len(events) == 1, [e.get("tags") for e in events]
    event = events[0]
    assert event["tags"]["event_type"] == "contact.created"
    assert event["tags"]["key"] == "evt_123"
    assert event["exception"]["values"][-1]["type"] == "ValueError"
    assert "[redacted]" in event["exception"]["values"][-1]["value"]
    assert_no_personal_data(sentry)


def test_a_failed_publish_is_reported_once_per_outage_with_its_queue(sentry: CapturingTransport) -> None:
    failures = iter([True, True, True, False])

    async def publish(queue: str, jobs: list[Any], batch_id: str) -> None:
        if next(failures):
            raise ConnectionError(f"broker unreachable while sending {EMAIL}")

    async def go() -> None:
        batcher = Batcher("high", publish, max_size=4, linger_s=0.0, retry_initial_s=0.01, retry_max_s=0.02)
        batcher.start()
        await asyncio.gather(*(batcher.submit({"id": str(i), "data": {"payload": {"email": EMAIL}}}) for i in range(2)))

    asyncio.run(asyncio.wait_for(go(), 10))
    sentry_sdk.flush()
    events = sentry.events()
    assert [(e["tags"]["queue"], e["exception"]["values"][-1]["type"]) for e in events] == [("high", "ConnectionError")]
    assert json.dumps(events[0]["tags"]) and events[0]["tags"]["jobs"] == "2"
    assert_no_personal_data(sentry)
