"""Routing: the seed's priority table, in one module."""

import pytest

from messaging_events.contract.routing import (
    PRIORITY_BY_TYPE,
    QUEUE_ORDER,
    REJECTION_PRIORITY,
    EventType,
    Priority,
    event_type_from_name,
    priority_for,
)

SEED_TABLE = {
    "contact.created": "normal",
    "contact.updated": "normal",
    "contactPreference.updated": "high",
    "message.sent": "normal",
    "message.delivered": "low",
    "message.failed": "high",
    "message.bounced": "high",
    "email.opened": "low",
    "email.clicked": "low",
    "sms.replied": "normal",
}


@pytest.mark.parametrize(("name", "queue"), sorted(SEED_TABLE.items()))
def test_each_seed_type_routes_to_its_queue(name: str, queue: str) -> None:
    assert priority_for(EventType(name)) == Priority(queue)


def test_every_type_has_exactly_one_route() -> None:
    assert set(PRIORITY_BY_TYPE) == set(EventType)
    assert {t.value for t in EventType} == {*SEED_TABLE, "contact.deleted"}
    # contact.deleted travels (so the inbox records it as ignored) on a queue that exists.
    assert priority_for(EventType.CONTACT_DELETED) in QUEUE_ORDER
    assert REJECTION_PRIORITY in QUEUE_ORDER


def test_queue_order_is_high_normal_low() -> None:
    assert [p.value for p in QUEUE_ORDER] == ["high", "normal", "low"]


@pytest.mark.parametrize("name", sorted(SEED_TABLE))
def test_messaging_prefix_is_tolerated(name: str) -> None:
    assert event_type_from_name(f"messaging.{name}") == EventType(name)
    assert event_type_from_name(name) == EventType(name)


@pytest.mark.parametrize(
    "name", ["", "contact", "Contact.Created", "messaging.", "messaging.messaging.contact.created", "x.contact.created"]
)
def test_unknown_names(name: str) -> None:
    assert event_type_from_name(name) is None
