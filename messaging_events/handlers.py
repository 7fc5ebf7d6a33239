"""The handler registry: event type → the CRM service that applies it.

Handlers only translate a validated `Event` into CRM service calls and report an `Outcome`:

- contact and consent events always name their tenant; they link the contact (creating a stub
  profile for an unknown contact when needed) and report it as linked, so parked events re-apply;
  only `contact.created` and `contactPreference.updated` state consent (`contact.updated` reports it);
- message and engagement events for an unknown contact are parked; their tenant is the one they
  state, else the contact link's; a stated tenant other than the link's raises `TenantMismatch`
  (the inbox records the event as rejected, and nothing changes).
"""

from collections.abc import Callable
from typing import Any, TypeVar

from crm.models import Profile, Tenant
from crm.services import contacts, messages
from crm.services.contacts import ContactEventKind, ContactStatement
from crm.services.locks import contact_identities_wait
from crm.services.selectors import contact_link_for_event
from crm.services.tenants import tenant_get_or_create
from messaging_events.contract.jobs import Event
from messaging_events.contract.routing import EventType
from messaging_events.contract.schemas import (
    ContactCreated,
    ContactDeleted,
    ContactPreferenceUpdated,
    ContactUpdated,
    EmailClicked,
    EmailOpened,
    MessageBounced,
    MessageDelivered,
    MessageFailed,
    MessageSent,
    Payload,
    SmsReplied,
)
from messaging_events.outcomes import Outcome

# A handler gets the validated event and its inbox row's id, `source_event_id` (the source of every
# record it writes), and is typed with the payload class its event type validates to (`schemas.SCHEMAS`),
# so the checker sees the fields it reads. The registry is keyed by event type and holds handlers of
# `Event[Any]`: the contract, not the type checker, guarantees that `handler_for(event.type)` gets an
# event of that class.
P = TypeVar("P", bound=Payload)
TypedHandler = Callable[[Event[P], int], Outcome]
Handler = TypedHandler[Any]
HANDLERS: dict[EventType, Handler] = {}


def handles(event_type: EventType) -> Callable[[TypedHandler[P]], TypedHandler[P]]:
    def register(handler: TypedHandler[P]) -> TypedHandler[P]:
        HANDLERS[event_type] = handler
        return handler

    return register


def handler_for(event_type: EventType) -> Handler:
    return HANDLERS[event_type]


# -- contact and consent events ------------------------------------------------------------


def _statement_key(event: Event[Payload]) -> str:
    """The identity of an event's statements (ledger, field provenance): its type and key, so that a
    producer reusing one eventId for two types never has the second statement taken for the first."""
    return f"{event.type.value}:{event.idempotency_key}"


def _contact_statement_apply(
    event: Event[Payload], source_event_id: int, kind: ContactEventKind, **stated: Any
) -> Outcome:
    """The three contact events' one path: what the event states, as one `ContactStatement`."""
    result = contacts.contact_statement_apply(
        ContactStatement(
            kind=kind,
            tenant_external_id=event.tenant_ref,
            contact_id=event.contact_id,
            occurred_at=event.occurred_at,
            source_key=_statement_key(event),
            source_event_id=source_event_id,
            **stated,
        )
    )
    return Outcome.applied(result.tenant_id, note=result.outcome.value, linked=(event.contact_id,))


@handles(EventType.CONTACT_CREATED)
def contact_created(event: Event[ContactCreated], source_event_id: int) -> Outcome:
    consent = event.payload.consent_statements()
    return _contact_statement_apply(
        event, source_event_id, ContactEventKind.CREATED, **event.payload.contact_fields(), opt_ins=consent
    )


@handles(EventType.CONTACT_UPDATED)
def contact_updated(event: Event[ContactUpdated], source_event_id: int) -> Outcome:
    reported = event.payload.consent_statements()  # an observation only (crm.services.contacts)
    return _contact_statement_apply(
        event, source_event_id, ContactEventKind.UPDATED, **event.payload.contact_fields(), reported_opt_ins=reported
    )


@handles(EventType.CONTACT_PREFERENCE_UPDATED)
def contact_preference_updated(event: Event[ContactPreferenceUpdated], source_event_id: int) -> Outcome:
    consent = event.payload.consent_statements()
    return _contact_statement_apply(event, source_event_id, ContactEventKind.PREFERENCES, opt_ins=consent)


@handles(EventType.CONTACT_DELETED)
def contact_deleted(event: Event[ContactDeleted], source_event_id: int) -> Outcome:
    # Recorded under its tenant, so that the tenant's staff see it; an ignored event never creates one.
    tenant_id = Tenant.objects.filter(external_id=event.tenant_ref).values_list("pk", flat=True).first()
    return Outcome.ignored(tenant_id, "contact.deleted is reserved by the contract; the CRM changes nothing")


# -- message and engagement events ---------------------------------------------------------


def _message_event(apply: Callable[[Event[P], int, Profile], None]) -> TypedHandler[P]:
    """Find the contact's profile (or park the event), then apply it."""

    def handler(event: Event[P], source_event_id: int) -> Outcome:
        link = contact_link_for_event(contact_id=event.contact_id, tenant_external_id=event.tenant_ref)
        if link is None:
            contact_identities_wait([event.contact_id])
            link = contact_link_for_event(contact_id=event.contact_id, tenant_external_id=event.tenant_ref)
        if link is None:
            tenant_id = tenant_get_or_create(event.tenant_ref).pk if event.tenant_ref else None
            return Outcome.parked(tenant_id, f"contact {event.contact_id} is not known yet")
        apply(event, source_event_id, link.profile)
        return Outcome.applied(link.tenant_id)

    handler.__name__ = apply.__name__
    handler.__doc__ = apply.__doc__
    return handler


@handles(EventType.MESSAGE_SENT)
@_message_event
def message_sent(event: Event[MessageSent], source_event_id: int, profile: Profile) -> None:
    p = event.payload
    messages.message_sent_record(
        profile=profile,
        message_id=p.messageId,
        channel=p.channel or "",  # an unknown channel is dropped by the contract (partial acceptance)
        template_id=p.templateId,
        template_name=p.templateName,
        campaign_id=p.campaignId,
        occurred_at=event.occurred_at,
        source_event_id=source_event_id,
    )


@handles(EventType.MESSAGE_DELIVERED)
@_message_event
def message_delivered(event: Event[MessageDelivered], source_event_id: int, profile: Profile) -> None:
    messages.message_delivered_record(
        profile=profile,
        message_id=event.payload.messageId,
        occurred_at=event.occurred_at,
        source_event_id=source_event_id,
    )


@handles(EventType.MESSAGE_FAILED)
@_message_event
def message_failed(event: Event[MessageFailed], source_event_id: int, profile: Profile) -> None:
    messages.message_failed_record(
        profile=profile,
        message_id=event.payload.messageId,
        reason=event.payload.reason,
        occurred_at=event.occurred_at,
        source_key=event.idempotency_key,
        source_event_id=source_event_id,
    )


@handles(EventType.MESSAGE_BOUNCED)
@_message_event
def message_bounced(event: Event[MessageBounced], source_event_id: int, profile: Profile) -> None:
    messages.message_bounced_record(
        profile=profile,
        message_id=event.payload.messageId,
        bounce_type=event.payload.bounceType,
        reason=event.payload.reason,
        occurred_at=event.occurred_at,
        source_key=event.idempotency_key,
        source_event_id=source_event_id,
        contact_id=event.contact_id,
    )


@handles(EventType.EMAIL_OPENED)
@_message_event
def email_opened(event: Event[EmailOpened], source_event_id: int, profile: Profile) -> None:
    messages.email_opened_record(
        profile=profile,
        message_id=event.payload.messageId,
        campaign_id=event.payload.campaignId,
        device_type=event.payload.deviceType,
        occurred_at=event.occurred_at,
        source_event_id=source_event_id,
    )


@handles(EventType.EMAIL_CLICKED)
@_message_event
def email_clicked(event: Event[EmailClicked], source_event_id: int, profile: Profile) -> None:
    p = event.payload
    messages.email_clicked_record(
        profile=profile,
        message_id=p.messageId,
        campaign_id=p.campaignId,
        link_id=p.linkId,
        link_url=p.linkUrl,
        occurred_at=event.occurred_at,
        source_event_id=source_event_id,
    )


@handles(EventType.SMS_REPLIED)
@_message_event
def sms_replied(event: Event[SmsReplied], source_event_id: int, profile: Profile) -> None:
    messages.sms_replied_record(
        profile=profile,
        original_message_id=event.payload.originalMessageId,
        reply_text=event.payload.replyText,
        occurred_at=event.occurred_at,
        source_key=event.idempotency_key,
        source_event_id=source_event_id,
        contact_id=event.contact_id,
        received_at=event.job.timestamp,  # a reply "from the future" is ordered at its receipt
    )
