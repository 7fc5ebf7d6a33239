"""Event type → priority → Celery queue. The one place routing is decided (the seed's table)."""

from enum import StrEnum


class EventType(StrEnum):
    CONTACT_CREATED = "contact.created"
    CONTACT_UPDATED = "contact.updated"
    CONTACT_PREFERENCE_UPDATED = "contactPreference.updated"
    CONTACT_DELETED = "contact.deleted"
    MESSAGE_SENT = "message.sent"
    MESSAGE_DELIVERED = "message.delivered"
    MESSAGE_FAILED = "message.failed"
    MESSAGE_BOUNCED = "message.bounced"
    EMAIL_OPENED = "email.opened"
    EMAIL_CLICKED = "email.clicked"
    SMS_REPLIED = "sms.replied"


class Priority(StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


PRIORITY_BY_TYPE: dict[EventType, Priority] = {
    EventType.CONTACT_PREFERENCE_UPDATED: Priority.HIGH,
    EventType.MESSAGE_FAILED: Priority.HIGH,
    EventType.MESSAGE_BOUNCED: Priority.HIGH,
    EventType.CONTACT_CREATED: Priority.NORMAL,
    EventType.CONTACT_UPDATED: Priority.NORMAL,
    EventType.MESSAGE_SENT: Priority.NORMAL,
    EventType.SMS_REPLIED: Priority.NORMAL,
    # Recorded as ignored (the seed reserves it); it still travels so the inbox shows it.
    EventType.CONTACT_DELETED: Priority.NORMAL,
    EventType.MESSAGE_DELIVERED: Priority.LOW,
    EventType.EMAIL_OPENED: Priority.LOW,
    EventType.EMAIL_CLICKED: Priority.LOW,
}

# A job the contract cannot read still travels, so that its rejection is recorded.
REJECTION_PRIORITY = Priority.NORMAL

# Worker consumption order: with kombu's "priority" queue order strategy, `-Q high,normal,low`.
QUEUE_ORDER: tuple[Priority, ...] = (Priority.HIGH, Priority.NORMAL, Priority.LOW)

MESSAGING_PREFIX = "messaging."


def event_type_from_name(name: str) -> EventType | None:
    """The event type a BullMQ job name stands for, tolerating a `messaging.` prefix."""
    if name.startswith(MESSAGING_PREFIX):
        name = name[len(MESSAGING_PREFIX) :]
    try:
        return EventType(name)
    except ValueError:
        return None


def priority_for(event_type: EventType) -> Priority:
    return PRIORITY_BY_TYPE[event_type]
