"""The handler registry: event type → the CRM service that applies it.

Handlers only translate a validated `Event` into CRM service calls and report an `Outcome`.
"""

from collections.abc import Callable

from messaging_events.contract.jobs import Event
from messaging_events.contract.routing import EventType
from messaging_events.models import InboundEvent
from messaging_events.outcomes import Outcome

Handler = Callable[[Event, InboundEvent], Outcome]
HANDLERS: dict[EventType, Handler] = {}


def handles(event_type: EventType) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        HANDLERS[event_type] = handler
        return handler

    return register


def handler_for(event_type: EventType) -> Handler:
    return HANDLERS[event_type]


@handles(EventType.CONTACT_DELETED)
def contact_deleted(event: Event, row: InboundEvent) -> Outcome:
    return Outcome.ignored(None, "contact.deleted is reserved by the contract; the CRM changes nothing")
