"""Contact points: which email or phone a consent statement is about (docs/decisions.md, "Consent
belongs to the contact point").

- Email consent is about an email address; SMS and WhatsApp consent about an E.164 phone number;
  push consent has no address here (its address is always "").
- A profile's current address for a channel is its `email` or `phone` field.
- Each email or phone a Messaging contact's own events state is kept in `ContactAddress` with its
  occurred-at, so the address a contact had at any time can be read back: the latest stated at or
  before that time, else the earliest stated after it (a statement that came before the contact's
  first event is about the address it then had), else "" (not known yet). Being a function of the
  set of events, it does not depend on arrival order.
"""

from collections.abc import Iterable
from datetime import datetime

from django.db import connection

from crm.models import Channel, ContactAddress, Profile

ADDRESS_KIND: dict[str, str] = {Channel.EMAIL: "email", Channel.SMS: "phone", Channel.WHATSAPP: "phone"}

_INSERT_SQL = """
INSERT INTO crm_contactaddress (tenant_id, contact_id, kind, address, occurred_at, source_key)
VALUES {rows}
ON CONFLICT (contact_id, kind, source_key) DO NOTHING
RETURNING id
"""


def address_kind(channel: str) -> str | None:
    """The profile field holding a channel's address ("email" or "phone"); None for push."""
    return ADDRESS_KIND.get(channel)


def profile_addresses(*, email: str, phone: str) -> dict[str, str]:
    """A profile's current address per channel, from its `email` and `phone`."""
    current = {"email": email, "phone": phone}
    return {channel: current[kind] if (kind := address_kind(channel)) else "" for channel in Channel.values}


def profile_lock_addresses(*, profile_id: int) -> dict[str, str]:
    """`locks.profile_lock` that also reads the profile's current address per channel, in one statement."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT email, phone FROM crm_profile WHERE id = %s FOR NO KEY UPDATE", [profile_id])
        row = cursor.fetchone()
    if row is None:
        raise Profile.DoesNotExist(f"profile {profile_id}")
    return profile_addresses(email=row[0], phone=row[1])


def contact_addresses_record(
    *, tenant_id: int, contact_id: str, addresses: dict[str, str], occurred_at: datetime, source_key: str
) -> bool:
    """Keep the email/phone (normalised, non-empty) a contact's event stated. Returns whether any was new."""
    values = [(kind, address) for kind, address in sorted(addresses.items()) if address]
    if not values:
        return False
    params: list = []
    for kind, address in values:
        params += [tenant_id, contact_id, kind, address, occurred_at, source_key[:300]]
    rows = ", ".join("(%s, %s, %s, %s, %s, %s)" for _ in values)
    with connection.cursor() as cursor:
        cursor.execute(_INSERT_SQL.format(rows=rows), params)
        return bool(cursor.fetchall())


def address_as_of(history: list[tuple[datetime, str, str]], at: datetime) -> str:
    """From `(occurred_at, source_key, address)` sorted ascending: the address at `at` (module doc)."""
    if not history:
        return ""
    before = [row for row in history if row[0] <= at]
    return (before[-1] if before else history[0])[2]


def contact_histories(*, contact_id: str, kinds: Iterable[str]) -> dict[str, list[tuple[datetime, str, str]]]:
    """Each kind's `(occurred_at, source_key, address)` history of the contact, sorted ascending, in one query."""
    histories: dict[str, list[tuple[datetime, str, str]]] = {kind: [] for kind in kinds}
    rows = ContactAddress.objects.filter(contact_id=contact_id, kind__in=list(histories)).values_list(
        "kind", "occurred_at", "source_key", "address"
    )
    for kind, occurred_at, source_key, address in rows:
        histories[kind].append((occurred_at, source_key, address))
    for history in histories.values():
        history.sort()
    return histories
