"""Typed payloads, one per event type. Unknown extra fields are kept: the producer may add fields."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, StrictBool, field_validator, model_validator

from messaging_events.contract.fields import Email, Identifier, LongText, Name, Phone, ShortText, Timestamp, Url
from messaging_events.contract.routing import EventType

OPT_IN_FIELDS: dict[str, str] = {
    "emailOptIn": "email",
    "smsOptIn": "sms",
    "pushOptIn": "push",
    "whatsappOptIn": "whatsapp",
}


class Payload(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    eventId: Identifier | None = None
    tenantId: Identifier | None = None
    contactId: Identifier | None = None

    def consent_statements(self) -> dict[str, bool]:
        """Channel → opted in, for the opt-in fields present. Absent means no statement."""
        return {
            channel: getattr(self, field)
            for field, channel in OPT_IN_FIELDS.items()
            if getattr(self, field, None) is not None
        }


class ContactEventPayload(Payload):
    """Contact and consent events name their tenant and contact themselves."""

    tenantId: Identifier
    contactId: Identifier


class ContactFieldsPayload(ContactEventPayload):
    email: Email | None = None
    phoneNumber: Phone | None = None
    firstName: Name | None = None
    lastName: Name | None = None
    emailOptIn: StrictBool | None = None
    smsOptIn: StrictBool | None = None
    pushOptIn: StrictBool | None = None
    whatsappOptIn: StrictBool | None = None


class ContactCreated(ContactFieldsPayload):
    pass


class ContactUpdated(ContactFieldsPayload):
    pass


class ContactPreferenceUpdated(ContactEventPayload):
    emailOptIn: StrictBool | None = None
    smsOptIn: StrictBool | None = None
    pushOptIn: StrictBool | None = None
    whatsappOptIn: StrictBool | None = None

    @model_validator(mode="after")
    def _states_something(self) -> "ContactPreferenceUpdated":
        if not self.consent_statements():
            raise ValueError("names no opt-in field (emailOptIn, smsOptIn, pushOptIn or whatsappOptIn)")
        return self


class ContactDeleted(ContactEventPayload):
    pass


class MessagePayload(Payload):
    messageId: Identifier


class MessageSent(MessagePayload):
    channel: Literal["EMAIL", "SMS", "PUSH", "WHATSAPP"]
    templateId: Identifier | None = None
    templateName: ShortText | None = None
    campaignId: Identifier | None = None
    sentAt: Timestamp | None = None

    @field_validator("channel", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class MessageDelivered(MessagePayload):
    deliveredAt: Timestamp | None = None


class MessageFailed(MessagePayload):
    reason: ShortText | None = None
    failedAt: Timestamp | None = None


class MessageBounced(MessagePayload):
    bounceType: Literal["hard", "soft"]
    reason: ShortText | None = None
    bouncedAt: Timestamp | None = None


class EmailOpened(MessagePayload):
    campaignId: Identifier | None = None
    openedAt: Timestamp | None = None
    deviceType: ShortText | None = None
    userAgent: LongText | None = None


class EmailClicked(MessagePayload):
    campaignId: Identifier | None = None
    linkId: Identifier | None = None
    linkUrl: Url | None = None
    clickedAt: Timestamp | None = None


class SmsReplied(Payload):
    originalMessageId: Identifier | None = None
    replyText: LongText
    repliedAt: Timestamp | None = None


SCHEMAS: dict[EventType, type[Payload]] = {
    EventType.CONTACT_CREATED: ContactCreated,
    EventType.CONTACT_UPDATED: ContactUpdated,
    EventType.CONTACT_PREFERENCE_UPDATED: ContactPreferenceUpdated,
    EventType.CONTACT_DELETED: ContactDeleted,
    EventType.MESSAGE_SENT: MessageSent,
    EventType.MESSAGE_DELIVERED: MessageDelivered,
    EventType.MESSAGE_FAILED: MessageFailed,
    EventType.MESSAGE_BOUNCED: MessageBounced,
    EventType.EMAIL_OPENED: EmailOpened,
    EventType.EMAIL_CLICKED: EmailClicked,
    EventType.SMS_REPLIED: SmsReplied,
}

# The payload field that says when a message or engagement event happened.
OCCURRED_AT_FIELD: dict[EventType, str] = {
    EventType.MESSAGE_SENT: "sentAt",
    EventType.MESSAGE_DELIVERED: "deliveredAt",
    EventType.MESSAGE_FAILED: "failedAt",
    EventType.MESSAGE_BOUNCED: "bouncedAt",
    EventType.EMAIL_OPENED: "openedAt",
    EventType.EMAIL_CLICKED: "clickedAt",
    EventType.SMS_REPLIED: "repliedAt",
}
