"""Partial acceptance at the contract: an empty or invalid optional field is dropped with a warning; only
what identifies the event or states consent rejects it; a timestamp without a zone is read as UTC."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from messaging_events.contract.fields import FieldWarning, value_summary
from messaging_events.contract.jobs import Event, Rejection, content_key, parse_job
from messaging_events.contract.schemas import ContactCreated
from tests.messaging_events.samples import contact_job, contact_payloads, message_job, message_payloads

JOB_TS = int(datetime(2025, 12, 14, 7, 0, tzinfo=UTC).timestamp() * 1000)
JOB_TIME = datetime(2025, 12, 14, 7, 0, tzinfo=UTC)
IN_THREE_DAYS = (datetime.now(UTC) + timedelta(days=3)).isoformat().replace("+00:00", "Z")


def parse(job: dict[str, Any]) -> Event | Rejection:
    return parse_job({"id": "42", "name": job["name"], "timestamp": JOB_TS, "attemptsMade": 0, "data": job["data"]})


def accepted(job: dict[str, Any]) -> Event:
    parsed = parse(job)
    assert isinstance(parsed, Event), getattr(parsed, "reason", parsed)
    return parsed


def rejected(job: dict[str, Any]) -> str:
    parsed = parse(job)
    assert isinstance(parsed, Rejection), parsed
    assert not hasattr(parsed, "warnings")
    return parsed.reason


def a_job(event_type: str, **changes: Any) -> dict[str, Any]:
    if event_type in contact_payloads():
        return contact_job(event_type, {**contact_payloads()[event_type], **changes})
    return message_job(event_type, {**message_payloads()[event_type], **changes})


# (event type, field, value sent, the problem's start, the value's summary)
DROPPED = [
    ("contact.created", "email", "", "must not be empty", "empty string"),
    ("contact.created", "email", "   ", "must not be empty", '"   "'),
    ("contact.created", "email", "john@", "is not a valid email address", '"john@"'),
    ("contact.created", "email", 42, "must be a string", "number 42"),
    ("contact.created", "phoneNumber", "", "must not be empty", "empty string"),
    ("contact.created", "phoneNumber", "12", "is not a valid phone number", '"12"'),
    ("contact.created", "phoneNumber", "call me", "is not a phone number", '"call me"'),
    ("contact.created", "phoneNumber", "+27" + "1" * 40, "must be a string of at most 32 characters", None),
    ("contact.created", "firstName", "J" * 201, "String should have at most 200 characters", None),
    ("contact.created", "lastName", "S" * 5000, "String should have at most 200 characters", None),
    ("contact.created", "firstName", "Jo\x00hn", "must not contain NUL characters", '"Jo\\u0000hn"'),
    ("contact.created", "lastName", ["Smith"], "Input should be a valid string", 'array ["Smith"]'),
    ("contact.updated", "email", "", "must not be empty", "empty string"),
    ("contact.updated", "phoneNumber", "12", "is not a valid phone number", '"12"'),
    ("contact.updated", "firstName", "J" * 201, "String should have at most 200 characters", None),
    ("message.sent", "channel", "VOICE", "Input should be 'EMAIL', 'SMS', 'PUSH' or 'WHATSAPP'", '"VOICE"'),
    ("message.sent", "channel", "", "Input should be 'EMAIL', 'SMS', 'PUSH' or 'WHATSAPP'", "empty string"),
    ("message.sent", "templateId", "has space", "must be a string of 1 to 128 characters", '"has space"'),
    ("message.sent", "templateName", "T" * 501, "String should have at most 500 characters", None),
    ("message.sent", "campaignId", "", "must be a string of 1 to 128 characters", "empty string"),
    ("message.sent", "sentAt", "yesterday", "must be an ISO 8601 timestamp", '"yesterday"'),
    ("message.sent", "sentAt", "1999-12-31T23:59:59Z", "is before 2000-01-01", None),
    ("message.sent", "sentAt", IN_THREE_DAYS, "is more than 24 hours in the future", None),
    ("message.sent", "sentAt", 1765699200, "must be an ISO 8601 timestamp string", "number 1765699200"),
    ("message.delivered", "deliveredAt", "2025-13-01T00:00:00Z", "must be an ISO 8601 timestamp", None),
    ("message.failed", "reason", "r" * 501, "String should have at most 500 characters", None),
    ("message.failed", "failedAt", "", "must be an ISO 8601 timestamp", "empty string"),
    ("message.bounced", "reason", {"code": 550}, "Input should be a valid string", 'object {"code": 550}'),
    ("message.bounced", "bouncedAt", "0001-01-01T00:00:00+14:00", "is outside the calendar once converted", None),
    ("email.opened", "campaignId", "a/b c", "must be a string of 1 to 128 characters", '"a/b c"'),
    ("email.opened", "openedAt", "2025-12-14T09:15:00+25:00", "must be an ISO 8601 timestamp", None),
    ("email.opened", "deviceType", "d" * 501, "String should have at most 500 characters", None),
    ("email.opened", "userAgent", "u" * 4001, "String should have at most 4000 characters", None),
    ("email.clicked", "campaignId", "x" * 129, "must be a string of 1 to 128 characters", None),
    ("email.clicked", "linkId", "", "must be a string of 1 to 128 characters", "empty string"),
    ("email.clicked", "linkUrl", "https://example.com/" + "p" * 4000, "String should have at most 4000", None),
    ("email.clicked", "clickedAt", "soon", "must be an ISO 8601 timestamp", '"soon"'),
    ("sms.replied", "originalMessageId", "m 1", "must be a string of 1 to 128 characters", '"m 1"'),
    ("sms.replied", "repliedAt", "2025-12-14T25:00:00Z", "must be an ISO 8601 timestamp", None),
]


@pytest.mark.parametrize(
    ("event_type", "field", "value", "problem", "summary"), DROPPED, ids=lambda v: str(v)[:30] if v != "" else "empty"
)
def test_an_invalid_optional_field_is_dropped_with_a_warning(
    event_type: str, field: str, value: Any, problem: str, summary: str | None
) -> None:
    job = a_job(event_type, **{field: value})
    event = accepted(job)

    assert getattr(event.payload, field) is None
    assert len(event.warnings) == 1
    (warning,) = event.warnings
    assert warning.field == f"payload.{field}"
    assert warning.problem.startswith(problem), warning.problem
    assert warning.problem.endswith("; dropped")
    assert warning.value == (summary if summary is not None else value_summary(value))
    # Everything else the event said is kept, the raw data whole.
    clean = accepted(a_job(event_type))
    assert clean.warnings == ()
    for name, kept in clean.payload:
        if name != field:
            assert getattr(event.payload, name) == kept, name
    assert event.raw["payload"][field] == value
    assert event.contact_id == clean.contact_id and event.tenant_ref == clean.tenant_ref
    assert event.payload.consent_statements() == clean.payload.consent_statements()


def test_several_bad_fields_give_one_warning_each_in_field_order() -> None:
    event = accepted(a_job("contact.created", phoneNumber="", firstName="J" * 300, email="nope", lastName="Smith"))
    assert [w.field for w in event.warnings] == ["payload.email", "payload.phoneNumber", "payload.firstName"]
    assert (event.payload.email, event.payload.phoneNumber, event.payload.firstName) == (None, None, None)
    assert event.payload.lastName == "Smith"
    assert event.payload.consent_statements() == {"email": True, "sms": False}
    assert event.idempotency_key == "evt_123"


def test_warnings_are_the_same_on_every_judgement() -> None:
    """A replay re-parses the stored data: the same data gives the same warnings."""
    job = a_job("contact.created", phoneNumber="", firstName="J" * 300)
    assert accepted(job).warnings == accepted(job).warnings
    assert all(isinstance(w, FieldWarning) for w in accepted(job).warnings)


def test_null_is_absent_not_a_warning() -> None:
    event = accepted(a_job("contact.created", email=None, phoneNumber=None, firstName=None))
    assert event.warnings == ()
    assert event.payload.email is None


def test_a_dropped_occurred_at_falls_back_to_the_job_time_and_keys_on_it() -> None:
    job = a_job("email.opened", openedAt="not a time")
    event = accepted(job)
    assert event.occurred_at == JOB_TIME
    # As for an event without a time of its own: the job's timestamp is part of the content identity.
    assert event.idempotency_key == content_key("email.opened", job["data"], JOB_TS)
    assert event.idempotency_key != content_key("email.opened", job["data"])


class TestTimestampWithoutAZone:
    def test_is_read_as_utc_with_a_warning(self) -> None:
        event = accepted(a_job("message.sent", sentAt="2025-12-14T08:00:00"))
        assert event.occurred_at == datetime(2025, 12, 14, 8, 0, tzinfo=UTC)
        assert event.payload.sentAt == datetime(2025, 12, 14, 8, 0, tzinfo=UTC)
        assert event.warnings == (
            FieldWarning("payload.sentAt", "has no time zone; read as UTC", '"2025-12-14T08:00:00"'),
        )

    def test_a_date_alone_is_midnight_utc(self) -> None:
        event = accepted(a_job("email.opened", openedAt="2025-12-14"))
        assert event.occurred_at == datetime(2025, 12, 14, tzinfo=UTC)
        assert event.warnings[0].problem == "has no time zone; read as UTC"

    def test_out_of_range_once_read_as_utc_is_dropped_with_one_warning(self) -> None:
        event = accepted(a_job("message.delivered", deliveredAt="1999-06-01T00:00:00"))
        assert event.occurred_at == JOB_TIME
        assert [(w.field, w.problem) for w in event.warnings] == [
            ("payload.deliveredAt", "is before 2000-01-01; dropped")
        ]

    def test_with_a_zone_gives_no_warning(self) -> None:
        event = accepted(a_job("message.sent", sentAt="2025-12-14T10:00:00+02:00"))
        assert event.occurred_at == datetime(2025, 12, 14, 8, 0, tzinfo=UTC)
        assert event.warnings == ()


@pytest.mark.parametrize(
    ("event_type", "changes", "reason"),
    [
        # What identifies the event.
        ("contact.created", {"tenantId": ""}, "payload.tenantId: Value error, must be a string of 1 to 128"),
        ("contact.created", {"tenantId": None}, "payload.tenantId"),
        ("contact.created", {"contactId": ""}, "payload.contactId: Value error, must be a string of 1 to 128"),
        ("contact.updated", {"contactId": "has space"}, "payload.contactId"),
        ("contact.created", {"eventId": "has space"}, "payload.eventId"),
        ("message.sent", {"messageId": ""}, "payload.messageId"),
        ("email.opened", {"messageId": None}, "payload.messageId"),
        # The consent statement itself, and what decides a consent effect.
        ("contact.created", {"emailOptIn": "true"}, "payload.emailOptIn: Input should be a valid boolean"),
        ("contact.created", {"smsOptIn": 0}, "payload.smsOptIn: Input should be a valid boolean"),
        ("contact.updated", {"whatsappOptIn": "no"}, "payload.whatsappOptIn"),
        ("contactPreference.updated", {"smsOptIn": "yes"}, "payload.smsOptIn"),
        ("contactPreference.updated", {"smsOptIn": None}, "names no opt-in field"),
        ("message.bounced", {"bounceType": "permanent"}, "payload.bounceType"),
        ("message.bounced", {"bounceType": ""}, "payload.bounceType"),
        ("sms.replied", {"replyText": "x" * 4001}, "payload.replyText"),
    ],
)
def test_identity_and_consent_still_reject(event_type: str, changes: dict, reason: str) -> None:
    assert reason in rejected(a_job(event_type, **changes))


def test_a_bad_consent_flag_rejects_even_with_droppable_fields_beside_it() -> None:
    reason = rejected(a_job("contact.created", phoneNumber="", emailOptIn="yes"))
    assert "payload.emailOptIn" in reason
    assert "phoneNumber" not in reason  # the rejection names what rejected it


@pytest.mark.parametrize(
    ("data_changes", "reason"),
    [
        ({"tenantId": ""}, "data.tenantId must be a string of 1 to 128 characters"),
        ({"identity": {"messagingContactId": ""}}, "data.identity.messagingContactId must be a string"),
        ({"type": "message.failed"}, "disagree"),
    ],
)
def test_the_envelope_identity_still_rejects(data_changes: dict, reason: str) -> None:
    job = a_job("message.sent", templateName="T" * 501)
    job["data"].update(data_changes)
    assert reason in rejected(job)


def test_strict_validation_without_a_collector_still_refuses() -> None:
    """`Model.model_validate` without a warnings collector (the contact backfill) judges a row whole."""
    with pytest.raises(ValidationError, match="phoneNumber"):
        ContactCreated.model_validate({**contact_payloads()["contact.created"], "phoneNumber": ""})
    with pytest.raises(ValidationError, match="firstName"):
        ContactCreated.model_validate({**contact_payloads()["contact.created"], "firstName": "J" * 201})


@pytest.mark.parametrize(
    ("value", "summary"),
    [
        ("", "empty string"),
        ("short", '"short"'),
        ("x" * 41, '"' + "x" * 40 + '"... (41 characters)'),
        ("caf\u00e9 \ud800", '"caf\\u00e9 \\ud800"'),
        (True, "boolean true"),
        ([1] * 30, "array [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, ..."),
    ],
)
def test_value_summary_is_short_ascii_json(value: Any, summary: str) -> None:
    assert value_summary(value) == summary
    assert value_summary(value).isascii()
