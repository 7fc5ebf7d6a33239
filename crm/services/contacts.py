"""Contact and consent events: `contact.created` (and backfills), `contact.updated`, `contactPreference.updated`.

All three resolve the contact (crm.services.identity), then apply the identity fields under the
provenance rule (crm.services.profiles). The opt-in flags of `contact.created` and
`contactPreference.updated` are consent statements, last-writer-wins through the consent ledger
(crm.services.consent). The flags of `contact.updated` are not: the seed gives it no consent action,
and its routine snapshot must never undo an opt-out the CRM recorded (a STOP reply, the bounce
automation, staff). They are kept as an observation (`Profile.consent_reports`, and on the
`PROFILE_UPDATED` activity), and a disagreement with the CRM's state is shown to staff.
Only the fields present are touched: an absent flag or field is no statement.

One entry point, `contact_statement_apply`, takes one typed `ContactStatement` from every contact
handler and from `backfill_contacts`:
- `ContactEventKind.CREATED` (`contact.created` and the backfill): links the contact; a contact linked
  to a stub that now resolves by email or phone to another profile merges the stub into it; a stub
  with no other match becomes a real profile.
- `UPDATED` (`contact.updated`) and `PREFERENCES` (`contactPreference.updated`) for an unknown contact
  resolve by email/phone, else create a stub profile and link it, so that an opt-out is never delayed.

Consent follows the contact point (crm.services.consent): each statement is about the address its
event states, else the one its contact had then; the email and phone each contact event states are
kept per contact (`ContactAddress`), and when they or the profile's own address change, the consent
state is rebuilt for the addresses the profile now holds.

A `PROFILE_UPDATED` activity is written when an event's email, phone or name differs from the
stored value of an existing profile (old, new, applied), and carries an identity conflict (email
and phone matching different profiles) under `identity_conflict`.
"""

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from django.db import transaction

from crm.models import ConsentSource, Profile
from crm.normalise import email_normalise, phone_normalise
from crm.services.consent import consent_statements_record
from crm.services.consent_rebuild import consent_follow_addresses
from crm.services.contact_points import address_kind, contact_addresses_record, profile_addresses
from crm.services.identity import Resolved, contact_resolve_or_create
from crm.services.locks import profile_lock_get
from crm.services.merge import profile_merge
from crm.services.profiles import consent_reports_record, profile_fields_apply_event, profile_fields_fill_new

MESSAGING_LAWFUL_BASIS = "consent as recorded by the Messaging service"


class ContactEventKind(StrEnum):
    """Which contact event a statement comes from: it decides what a missing contact becomes."""

    CREATED = "created"  # contact.created and the backfill: a real profile
    UPDATED = "updated"  # contact.updated: a stub until its contact.created arrives
    PREFERENCES = "preferences"  # contactPreference.updated: a stub too


class ContactImportOutcome(StrEnum):
    CREATED = "created"  # a new profile (or a stub that became real)
    LINKED = "linked"  # the contactId was linked to an existing profile (possibly merging a stub into it)
    UPDATED = "updated"  # already linked; fields or consent statements were recorded
    UNCHANGED = "unchanged"  # already linked, and every statement was already known


@dataclass(frozen=True)
class ContactImportResult:
    outcome: ContactImportOutcome
    tenant_id: int
    profile_id: int
    merged_profile_id: int | None = None


@dataclass(frozen=True)
class ContactStatement:
    """What one contact event or backfill row states about a contact: the one input of
    `contact_statement_apply`, built by the contact handlers and the backfill alike.

    `source_key` is the statement's identity (the event's type and idempotency key, or the backfill
    row's key): applying the same statement twice changes nothing the second time ("unchanged").
    `opt_ins` are consent decisions (contact.created, the backfill, contactPreference.updated);
    `reported_opt_ins` are what contact.updated reports, an observation only (module doc).
    """

    kind: ContactEventKind
    tenant_external_id: str
    contact_id: str
    occurred_at: datetime
    source_key: str
    source_event_id: int | None = None
    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    opt_ins: dict[str, bool] = field(default_factory=dict)
    reported_opt_ins: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind is ContactEventKind.UPDATED and self.opt_ins:
            raise ValueError("contact.updated reports consent (reported_opt_ins); it never decides it")
        if self.kind is not ContactEventKind.UPDATED and self.reported_opt_ins:
            raise ValueError(f"only contact.updated reports consent, not a {self.kind} statement")
        if self.kind is ContactEventKind.PREFERENCES and any((self.email, self.phone, self.first_name, self.last_name)):
            raise ValueError("contactPreference.updated states consent only")


def _consent_apply(
    statement: ContactStatement, *, profile: Profile, addresses: dict[str, str], new_profile: bool
) -> bool:
    """The statement's opt-in flags, in one pass over the channels. The caller holds the profile lock and a
    fresh profile, so its addresses are not read again."""
    results = consent_statements_record(
        profile=profile,
        opt_ins=statement.opt_ins,
        addresses={
            channel: addresses[kind] if (kind := address_kind(channel)) else None for channel in statement.opt_ins
        },
        occurred_at=statement.occurred_at,
        source=ConsentSource.MESSAGING_EVENT,
        source_key=statement.source_key,
        source_event_id=statement.source_event_id,
        lawful_basis=MESSAGING_LAWFUL_BASIS,
        contact_id=statement.contact_id,
        current=profile_addresses(email=profile.email, phone=profile.phone),
        new_profile=new_profile,
    )
    return any(result.recorded for result in results.values())


@transaction.atomic(savepoint=False)
def contact_statement_apply(statement: ContactStatement) -> ContactImportResult:
    """The one way a contact statement reaches the CRM, for `contact.created` and the backfill
    (resolve identity, link the contactId, fill fields, record consent), `contact.updated` (fill
    fields where still empty; its opt-ins are reported, not decided) and `contactPreference.updated`
    (the opt-ins present, last-writer-wins). A contact the CRM does not know becomes a profile when
    the statement creates it, a stub otherwise."""
    email = email_normalise(statement.email)
    phone = phone_normalise(statement.phone)
    creating = statement.kind is ContactEventKind.CREATED
    values = {"email": email, "phone": phone, "first_name": statement.first_name, "last_name": statement.last_name}

    def fill(new: Profile) -> None:
        profile_fields_fill_new(
            profile=new, values=values, occurred_at=statement.occurred_at, source_key=statement.source_key
        )

    tenant, profile, how, resolution = contact_resolve_or_create(
        tenant_external_id=statement.tenant_external_id,
        contact_id=statement.contact_id,
        email=email,
        phone=phone,
        stub=not creating,
        prepare=fill,
    )
    outcome = {Resolved.CREATED: ContactImportOutcome.CREATED, Resolved.LINKED: ContactImportOutcome.LINKED}.get(how)
    merged_profile_id = None
    if creating and profile.is_stub:
        if resolution.match is not None and how is Resolved.EXISTING:
            merged_profile_id = profile.pk
            by = "email" if email and resolution.match.email == email else "phone"
            profile = profile_merge(
                source=profile,
                target=resolution.match,
                occurred_at=statement.occurred_at,
                source_event_id=statement.source_event_id,
                reason=f"contact {statement.contact_id} resolved to this profile by {by}",
            )
            outcome = ContactImportOutcome.LINKED
        else:
            Profile.objects.filter(pk=profile.pk).update(is_stub=False)
            outcome = outcome or ContactImportOutcome.CREATED
    # A profile this event inserted holds its fields already, and no one else can see it yet.
    new_profile = how is Resolved.CREATED
    if not new_profile:
        profile = profile_lock_get(profile.pk)
    addresses = {"email": email, "phone": phone}
    held_before = (profile.email, profile.phone)
    contact_points_grew = contact_addresses_record(
        tenant_id=tenant.pk,
        contact_id=statement.contact_id,
        addresses=addresses,
        occurred_at=statement.occurred_at,
        source_key=statement.source_key,
    )
    extra_data = {"identity_conflict": resolution.conflict} if resolution.conflict else {}
    observation = None
    reports_changed = False
    if statement.reported_opt_ins:
        reports_changed = consent_reports_record(
            profile=profile,
            reported=statement.reported_opt_ins,
            occurred_at=statement.occurred_at,
            source_key=statement.source_key,
        )
        observation = {"consent_reported": dict(sorted(statement.reported_opt_ins.items()))}
        disagreements = {
            channel: {"reported": value, "crm": profile.opt_in(channel)}
            for channel, value in sorted(statement.reported_opt_ins.items())
            if profile.opt_in(channel) != value
        }
        if disagreements:
            extra_data["consent_disagrees"] = disagreements
    fields_written = new_profile or profile_fields_apply_event(
        profile=profile,
        values=values,
        occurred_at=statement.occurred_at,
        source_key=statement.source_key,
        source_event_id=statement.source_event_id,
        announce=True,
        extra_data=extra_data or None,
        observation=observation,
    )
    if not new_profile:  # a new profile has no consent statements yet
        consent_follow_addresses(
            profile=profile,
            contact_id=statement.contact_id if contact_points_grew else "",
            profile_address_changed=(profile.email, profile.phone) != held_before,
        )
    consent_recorded = _consent_apply(statement, profile=profile, addresses=addresses, new_profile=new_profile)
    if outcome is None:
        changed = fields_written or consent_recorded or reports_changed
        outcome = ContactImportOutcome.UPDATED if changed else ContactImportOutcome.UNCHANGED
    return ContactImportResult(
        outcome=outcome, tenant_id=tenant.pk, profile_id=profile.pk, merged_profile_id=merged_profile_id
    )
