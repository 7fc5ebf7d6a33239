"""Job parsing: both job shapes, identities, tenants, and readable rejections."""

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from messaging_events.contract.jobs import (
    MAX_JSON_DEPTH,
    Event,
    Rejection,
    check_depth,
    content_key,
    parse_job,
    unreadable_job,
)
from messaging_events.contract.routing import EventType, Priority
from tests.messaging_events.samples import (
    CONTACT,
    TENANT,
    contact_job,
    contact_payloads,
    message_job,
    message_payloads,
    seed_jobs,
)

JOB_TS = int(datetime(2025, 12, 14, 7, 0, tzinfo=UTC).timestamp() * 1000)


def bridged(job: dict[str, Any], job_id: str = "42", timestamp: int | None = JOB_TS, attempts: int = 0) -> dict:
    return {"id": job_id, "name": job["name"], "timestamp": timestamp, "attemptsMade": attempts, "data": job["data"]}


def event(job: dict[str, Any], **kwargs: Any) -> Event:
    parsed = parse_job(bridged(job, **kwargs))
    assert isinstance(parsed, Event), getattr(parsed, "reason", parsed)
    return parsed


def rejection(job: dict[str, Any], **kwargs: Any) -> Rejection:
    parsed = parse_job(bridged(job, **kwargs))
    assert isinstance(parsed, Rejection), parsed
    return parsed


@pytest.mark.parametrize("job", seed_jobs(), ids=lambda j: j["name"])
def test_every_seed_example_parses(job: dict[str, Any]) -> None:
    parsed = event(job)
    assert parsed.type == EventType(job["name"])
    assert parsed.contact_id == CONTACT
    assert parsed.job.job_id == "42"
    assert parsed.job.name == job["name"]
    assert parsed.job.timestamp == datetime.fromtimestamp(JOB_TS / 1000, UTC)
    assert parsed.raw == job["data"]


def test_contact_event_shape_metadata() -> None:
    parsed = event(contact_job("contact.created", contact_payloads()["contact.created"]), attempts=2)
    assert parsed.priority == Priority.NORMAL
    assert parsed.idempotency_key == "evt_123"
    assert parsed.tenant_ref == TENANT
    # Contact events carry no time of their own: the job's timestamp is the occurred-at.
    assert parsed.occurred_at == datetime.fromtimestamp(JOB_TS / 1000, UTC)
    assert parsed.job.attempts_made == 2
    assert parsed.payload.email == "john@example.com"
    assert parsed.payload.phoneNumber == "+27821234567"
    assert parsed.payload.consent_statements() == {"email": True, "sms": False}


def test_message_event_shape_metadata() -> None:
    parsed = event(message_job("message.bounced", message_payloads()["message.bounced"]))
    assert parsed.priority == Priority.HIGH
    assert parsed.tenant_ref == ""  # no tenant stated: the contact's link decides
    assert parsed.occurred_at == datetime(2025, 12, 14, 8, 0, 10, tzinfo=UTC)
    assert parsed.idempotency_key.startswith("sha256:")
    assert parsed.payload.bounceType == "hard"


def test_contact_event_in_the_envelope_shape() -> None:
    payload = contact_payloads()["contactPreference.updated"]
    parsed = event(message_job("contactPreference.updated", payload))
    assert parsed.type == EventType.CONTACT_PREFERENCE_UPDATED
    assert parsed.idempotency_key == "evt_125"
    assert parsed.tenant_ref == TENANT
    assert parsed.priority == Priority.HIGH


@pytest.mark.parametrize("where", ["data", "payload"])
def test_tenant_in_data_or_in_payload(where: str) -> None:
    payload = dict(message_payloads()["email.opened"])
    if where == "payload":
        payload["tenantId"] = "tenant_9"
        job = message_job("email.opened", payload)
    else:
        job = message_job("email.opened", payload, tenant="tenant_9")
    assert event(job).tenant_ref == "tenant_9"


def test_tenants_that_disagree_are_rejected() -> None:
    payload = {**message_payloads()["email.opened"], "tenantId": "tenant_a"}
    reason = rejection(message_job("email.opened", payload, tenant="tenant_b")).reason
    assert "tenant" in reason
    assert "disagree" in reason


def test_contacts_that_disagree_are_rejected() -> None:
    payload = {**message_payloads()["message.sent"], "contactId": "someone_else"}
    assert "disagree" in rejection(message_job("message.sent", payload)).reason


def test_message_event_without_a_contact_is_rejected() -> None:
    job = {
        "name": "message.delivered",
        "data": {"type": "message.delivered", "payload": message_payloads()["message.delivered"]},
    }
    assert "contact" in rejection(job).reason


def test_messaging_prefix_on_the_name() -> None:
    plain = event(contact_job("contact.created", contact_payloads()["contact.created"]))
    prefixed = event(contact_job("messaging.contact.created", contact_payloads()["contact.created"]))
    assert prefixed.type == EventType.CONTACT_CREATED
    assert prefixed.idempotency_key == plain.idempotency_key
    # Also for a message event's content hash, and with data.type stated without the prefix.
    job = message_job("message.sent", message_payloads()["message.sent"])
    assert event({**job, "name": "messaging.message.sent"}).idempotency_key == event(job).idempotency_key


def test_name_and_data_type_disagreeing_is_rejected() -> None:
    job = message_job("message.sent", message_payloads()["message.sent"])
    job["data"]["type"] = "message.failed"
    parsed = rejection(job)
    assert parsed.reason == "job name 'message.sent' and data.type 'message.failed' disagree"
    assert parsed.event_type == "message.sent"
    assert parsed.contact_id == CONTACT


def test_data_type_with_the_prefix_agrees() -> None:
    job = message_job("message.sent", message_payloads()["message.sent"])
    job["data"]["type"] = "messaging.message.sent"
    assert event(job).type == EventType.MESSAGE_SENT


def test_unknown_fields_are_kept() -> None:
    payload = {**contact_payloads()["contact.created"], "loyaltyTier": "gold", "nested": {"a": [1, 2]}}
    parsed = event(contact_job("contact.created", payload))
    assert parsed.payload.model_extra == {"loyaltyTier": "gold", "nested": {"a": [1, 2]}}
    assert parsed.raw["payload"]["loyaltyTier"] == "gold"
    job = message_job("email.clicked", {**message_payloads()["email.clicked"], "utm": "x"})
    job["data"]["producerVersion"] = 3
    parsed = event(job)
    assert parsed.payload.model_extra == {"utm": "x"}
    assert parsed.raw["producerVersion"] == 3


class TestIdempotencyKey:
    def test_is_the_event_id_when_there_is_one(self) -> None:
        job = contact_job("contact.deleted", contact_payloads()["contact.deleted"])
        assert event(job).idempotency_key == "evt_126"
        assert event(job, job_id="1").idempotency_key == event(job, job_id="99999").idempotency_key

    def test_is_a_stable_content_hash_otherwise(self) -> None:
        job = message_job("message.delivered", message_payloads()["message.delivered"])
        first = event(job, job_id="1", timestamp=JOB_TS)
        # Another job id (Redis lost its data and restarted at 1), another timestamp, another attempt count:
        again = event(copy.deepcopy(job), job_id="7", timestamp=JOB_TS + 60_000, attempts=3)
        assert first.idempotency_key == again.idempotency_key == content_key("message.delivered", job["data"])
        assert first.idempotency_key != "1"

    def test_hash_ignores_key_order(self) -> None:
        job = message_job("message.delivered", message_payloads()["message.delivered"])
        reordered = {"name": job["name"], "data": {k: job["data"][k] for k in reversed(list(job["data"]))}}
        reordered["data"]["payload"] = dict(reversed(list(job["data"]["payload"].items())))
        assert event(reordered).idempotency_key == event(job).idempotency_key

    def test_hash_differs_with_content_and_type(self) -> None:
        job = message_job("email.opened", message_payloads()["email.opened"])
        other = message_job("email.opened", {**message_payloads()["email.opened"], "openedAt": "2025-12-14T09:15:01Z"})
        assert event(job).idempotency_key != event(other).idempotency_key
        assert content_key("email.opened", job["data"]) != content_key("email.clicked", job["data"])

    def test_rejections_have_keys_too(self) -> None:
        job = {"name": "no.such.event", "data": {"payload": {"x": 1}}}
        assert rejection(job).idempotency_key == rejection(copy.deepcopy(job), job_id="9").idempotency_key
        with_id = {"name": "contact.created", "data": {"payload": {"eventId": "evt_bad", "tenantId": TENANT}}}
        assert rejection(with_id).idempotency_key == "evt_bad"


def _reason_for_payload(name: str, **changes: Any) -> str:
    payload = {**contact_payloads()[name], **changes}
    return rejection(contact_job(name, payload)).reason


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"emailOptIn": "yes"}, "payload.emailOptIn: Input should be a valid boolean"),
        ({"smsOptIn": 1}, "payload.smsOptIn: Input should be a valid boolean"),
        ({"tenantId": None}, "payload.tenantId"),
        ({"contactId": "has space"}, "payload.contactId: Value error, must be a string of 1 to 128 characters"),
    ],
)
def test_bad_contact_fields_are_rejected_with_readable_reasons(changes: dict, expected: str) -> None:
    assert expected in _reason_for_payload("contact.created", **changes)


def test_email_and_phone_are_normalised() -> None:
    payload = {**contact_payloads()["contact.updated"], "email": "  John@Example.COM ", "phoneNumber": "082 123 4567"}
    parsed = event(contact_job("contact.updated", payload))
    assert parsed.payload.email == "john@example.com"
    assert parsed.payload.phoneNumber == "+27821234567"


def test_preference_update_must_state_an_opt_in() -> None:
    payload = {"eventId": "e", "tenantId": TENANT, "contactId": CONTACT}
    assert "names no opt-in field" in rejection(contact_job("contactPreference.updated", payload)).reason


def test_timestamp_with_offset_is_converted_to_utc() -> None:
    job = message_job("email.opened", {**message_payloads()["email.opened"], "openedAt": "2025-12-14T11:15:00+02:00"})
    assert event(job).occurred_at == datetime(2025, 12, 14, 9, 15, tzinfo=UTC)


def test_contact_event_without_a_job_timestamp_is_rejected() -> None:
    job = contact_job("contact.created", contact_payloads()["contact.created"])
    assert "no occurred-at" in rejection(job, timestamp=None).reason


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        ({"name": "contact.merged", "data": {"payload": {}}}, "unknown event type 'contact.merged'"),
        ({"name": "", "data": {"payload": {}}}, "unknown event type ''"),
        ({"name": "contact.created", "data": "a string"}, "job data must be a JSON object, got str"),
        ({"name": "contact.created", "data": [1, 2]}, "job data must be a JSON object, got list"),
        ({"name": "contact.created", "data": None}, "job data must be a JSON object, got NoneType"),
        ({"name": "contact.created", "data": {}}, "job data has no `payload` object"),
        (
            {"name": "message.sent", "data": {"type": "message.sent", "payload": "x"}},
            "job data has no `payload` object",
        ),
        (
            {"name": "sms.replied", "data": {"identity": {"messagingContactId": "c"}, "payload": {}}},
            "payload.replyText: Field required",
        ),
        (
            {"name": "sms.replied", "data": {"identity": ["c"], "payload": {"replyText": "hi"}}},
            "data.identity must be an object",
        ),
    ],
)
def test_malformed_jobs_are_rejected_with_reasons(job: dict, expected: str) -> None:
    parsed = rejection(job)
    assert expected in parsed.reason
    assert parsed.raw == job["data"]
    assert parsed.priority == Priority.NORMAL  # every type here (and unknown ones) travels on normal


def test_rejection_of_a_known_type_keeps_its_priority_and_identity() -> None:
    job = message_job("message.bounced", {**message_payloads()["message.bounced"], "bounceType": "medium"})
    parsed = rejection(job)
    assert parsed.priority == Priority.HIGH
    assert parsed.event_type == "message.bounced"
    assert parsed.contact_id == CONTACT
    assert "payload.bounceType" in parsed.reason


def test_rejection_of_an_unknown_type_goes_on_normal() -> None:
    parsed = rejection({"name": "x" * 300, "data": {"payload": {"tenantId": TENANT, "contactId": "c1"}}})
    assert parsed.priority == Priority.NORMAL
    assert len(parsed.event_type) == 64
    assert parsed.tenant_ref == TENANT
    assert parsed.contact_id == "c1"


def test_rejection_set_by_the_bridge_wins() -> None:
    job = bridged(contact_job("contact.created", contact_payloads()["contact.created"]))
    job["rejection"] = "job data is 99999 bytes; the limit is 65536 (BRIDGE_MAX_JOB_BYTES)"
    job["key"] = "evt_123"
    job["data"] = {"_oversized": {"bytes": 99999, "head": "{...}"}}
    parsed = parse_job(job)
    assert isinstance(parsed, Rejection)
    assert parsed.reason == job["rejection"]
    assert parsed.idempotency_key == "evt_123"
    assert parsed.event_type == "contact.created"


def test_an_overlong_reply_is_rejected() -> None:
    # The reply is the event (and may carry an opt-out keyword): never cut or dropped.
    job = message_job("sms.replied", {**message_payloads()["sms.replied"], "replyText": "x" * 4001})
    assert "payload.replyText" in rejection(job).reason


def test_a_rejection_without_an_event_id_is_keyed_by_its_type_data_and_job_time() -> None:
    data = {"payload": {"tenantId": TENANT}}  # no contactId: rejected
    rejection = parse_job(bridged({"name": "contact.created", "data": data}))
    assert isinstance(rejection, Rejection)
    assert rejection.idempotency_key == content_key("contact.created", data, JOB_TS)


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for level in range(depth - 1):
        value = {"a": value} if level % 2 else [value]
    return value


def test_data_nesting_deeper_than_the_limit_is_refused() -> None:
    check_depth(_nested(MAX_JSON_DEPTH))  # at the limit: accepted
    check_depth({"flat": [1, 2, {"b": 3}]})
    for too_deep in (_nested(MAX_JSON_DEPTH + 1), {"a": _nested(MAX_JSON_DEPTH)}, [_nested(MAX_JSON_DEPTH)]):
        with pytest.raises(ValueError, match=f"^job data nests deeper than {MAX_JSON_DEPTH} levels$"):
            check_depth(too_deep)


def test_an_unreadable_jobs_record_cuts_its_id_and_name_to_their_columns() -> None:
    record = unreadable_job("i" * 100, "n" * 200, JOB_TS, 2, {"x": 1}, ValueError("boom"))
    assert (record["id"], record["name"], record["attemptsMade"], record["timestamp"]) == (
        "i" * 64,
        "n" * 128,
        2,
        JOB_TS,
    )
