"""Sign-ups in the worker's batch: which `contact.created` events `batch_apply` applies set-based.

A sign-up goes set-based when it is what the backfill's bulk writer calls "new"
(`crm.services.backfill_bulk`): its contactId has no link, no profile of its tenant holds its email or
phone, and it shares nothing with any other event of its batch that takes the per-event path. Its
effect is then exactly `contact_statement_apply`'s for a new contact (a real profile with its fields,
its link and addresses, each opt-in as the first statement of its channel, segment membership), which
`backfill_bulk.new_contacts_write` writes for many contacts at once; tests/crm/test_backfill_differential.py
and tests/messaging_events/test_batch_signups.py compare the two.

"Shares nothing" is decided before the batch's per-event pass, so that the sign-ups that are not new
stay in that pass, in their order:

- the contact, email and phone (per tenant) of every contact or consent event of the batch
  (`contact.created`, `contact.updated`, `contactPreference.updated`), and the contact of every other
  event that takes the per-event path (bounces, failures, replies, rejections), are counted once per
  distinct event (copies of one event with the same data count once: they are folded into one row);
- a `contact.created` whose keys are all counted once is a candidate; when there are at least
  `SET_BASED_SIGNUPS_MIN`, the candidates whose contacts the CRM does not know
  (`backfill_bulk.contacts_unknown`, four queries) are the set-based sign-ups.

Nothing the per-event pass does can make such a contact known (it would have to share a key), but another
worker can: `batch_apply` checks again under the identity locks and falls back when the plan changed.
"""

from collections import Counter

from crm.errors import ApplicationError
from crm.normalise import email_normalise, phone_normalise
from crm.services.backfill_bulk import contacts_unknown
from crm.services.contacts import ContactEventKind, ContactStatement
from messaging_events.contract.jobs import Event, Rejection, canonical_json
from messaging_events.contract.routing import EventType
from messaging_events.contract.schemas import ContactCreated, ContactFieldsPayload, Payload
from messaging_events.handlers import _statement_key

# Fewer candidates than this stay per event: a set-based batch of sign-ups costs a fixed 19 statements (four
# lookups to plan it, the same four under the locks, the writes), one sign-up per event 9 or 10.
SET_BASED_SIGNUPS_MIN = 2
CONTACT_EVENT_TYPES = frozenset(
    {EventType.CONTACT_CREATED, EventType.CONTACT_UPDATED, EventType.CONTACT_PREFERENCE_UPDATED}
)


class SignupPlanChanged(Exception):
    """A sign-up planned "new" is no longer new under its identity locks (another worker linked its contact
    or gave a profile its email or phone in between): the batch falls back to the per-event path."""


def signup_statement(event: Event[Payload], source_event_id: int | None) -> ContactStatement:
    """The statement `handlers.contact_created` hands to `contact_statement_apply`, with the email and phone
    normalised as `contact_statement_apply` normalises them (the bulk writer stores them as given).
    Raises ApplicationError for an address the normaliser refuses."""
    payload = event.payload
    assert isinstance(payload, ContactCreated)  # the contract validates contact.created to this class
    return ContactStatement(
        kind=ContactEventKind.CREATED,
        tenant_external_id=event.tenant_ref,
        contact_id=event.contact_id,
        occurred_at=event.occurred_at,
        source_key=_statement_key(event),
        source_event_id=source_event_id,
        email=email_normalise(payload.email),
        phone=phone_normalise(payload.phoneNumber),
        first_name=payload.firstName,
        last_name=payload.lastName,
        opt_ins=payload.consent_statements(),
    )


def copy_key(event: Event[Payload]) -> tuple[str, str, str, str]:
    """Copies of one event (one identity, the same data) share this; they are folded into one inbox row."""
    return event.tenant_ref, event.type.value, event.idempotency_key, canonical_json(event.raw)


def _keys(parsed: Event[Payload] | Rejection) -> set[str]:
    """What makes two events of a batch about the same person (module doc)."""
    keys = {f"contact:{parsed.contact_id}"} if parsed.contact_id else set()
    if isinstance(parsed, Event) and parsed.type in CONTACT_EVENT_TYPES:
        payload = parsed.payload
        if isinstance(payload, ContactFieldsPayload):
            for name, value in (("email", payload.email), ("phone", payload.phoneNumber)):
                if value:
                    keys.add(f"{name}:{parsed.tenant_ref}:{_normalised(name, value)}")
    return keys


def _normalised(name: str, value: str) -> str:
    try:
        return email_normalise(value) if name == "email" else phone_normalise(value)
    except ApplicationError:  # the event is rejected on the per-event path; any key will do
        return value


def signups_select(per_event: list[Event[Payload] | Rejection]) -> list[Event[Payload]]:
    """Of the batch's events that would take the per-event path, in batch order: the sign-ups to apply
    set-based (module doc), each distinct event once (the first of its copies)."""
    distinct: dict[object, Event[Payload] | Rejection] = {}
    for n, parsed in enumerate(per_event):
        distinct.setdefault(copy_key(parsed) if isinstance(parsed, Event) else n, parsed)
    keys = {id(parsed): _keys(parsed) for parsed in distinct.values()}
    seen = Counter(key for event_keys in keys.values() for key in event_keys)
    candidates: list[tuple[Event[Payload], ContactStatement]] = []
    for parsed in distinct.values():
        if not isinstance(parsed, Event) or parsed.type is not EventType.CONTACT_CREATED:
            continue
        if any(seen[key] > 1 for key in keys[id(parsed)]):
            continue
        try:
            candidates.append((parsed, signup_statement(parsed, None)))
        except ApplicationError:  # rejected on the per-event path, with its reason
            continue
    if len(candidates) < SET_BASED_SIGNUPS_MIN:
        return []
    unknown = contacts_unknown([statement for _, statement in candidates])
    return [event for (event, _), new in zip(candidates, unknown, strict=True) if new]
