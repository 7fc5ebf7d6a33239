"""Profile fields and their provenance (`Profile.field_sources`, docs/decisions.md).

`field_sources[field]` is `{"by": "event", "at": <occurred-at>, "event": <event identity>}` or
`{"by": "staff", "at": <when>, "user": <user id>}`. Times are stored as fixed-format UTC ISO strings
(microseconds), so they compare correctly as strings.

- Identity fields (email, phone, first and last name): an event fills a field that is empty, or that
  was set by a *later* event (the earliest event wins whatever the arrival order; ties broken by the
  event identity). Staff edits are never overwritten by events.
- Consent reports (`consent_reports`): what `contact.updated` said about each channel, which does
  not decide consent. The latest report per channel wins (greatest occurred-at, then event
  identity), whatever the arrival order; `consent_report_disagreements` lists the channels where it
  differs from the CRM's current state, for the profile page.
- Verification flags: events only ever say "not verified" (False). An event statement applies unless
  the flag was set by a statement that occurred later (a staff decision at a later time, or a later
  event), so a late bounce cannot undo a newer staff verification.
"""

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from crm.errors import ApplicationError
from crm.models import Activity, ActivityType, Profile
from crm.normalise import email_normalise, phone_normalise
from crm.services.consent_rebuild import consent_follow_addresses
from crm.services.locks import profile_lock_get
from crm.services.segments import segment_membership_refresh

IDENTITY_FIELDS = ("email", "phone", "first_name", "last_name")
VERIFICATION_FIELDS = ("email_verified", "phone_verified")
STAFF_EDITABLE = (*IDENTITY_FIELDS, *VERIFICATION_FIELDS)


def stamp(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def _event_may_set(source: dict | None, stored: str, at: str, key: str) -> bool:
    if not source:
        return not stored
    if source.get("by") != "event":
        return False
    return (at, key) < (str(source.get("at", "")), str(source.get("event", "")))


def _fields_event_merge(
    *, profile: Profile, values: dict[str, str | None], occurred_at: datetime, source_key: str
) -> tuple[list[str], dict[str, dict]]:
    """Set on `profile`, in memory, the identity fields the event may set (provenance rule).

    Returns the fields set, and every field whose value differs from the stored one (old, new, applied).
    """
    at = stamp(occurred_at)
    sources = dict(profile.field_sources or {})
    applied: list[str] = []
    changes: dict[str, dict] = {}
    for field in IDENTITY_FIELDS:
        new = values.get(field)
        if not new:
            continue  # absent: no statement
        stored = getattr(profile, field)
        may_set = _event_may_set(sources.get(field), stored, at, source_key)
        if new != stored:
            changes[field] = {"old": stored, "new": new, "applied": may_set}
        if may_set:
            setattr(profile, field, new)
            sources[field] = {"by": "event", "at": at, "event": source_key}
            applied.append(field)
    if applied:
        profile.field_sources = sources
    return applied, changes


def profile_fields_fill_new(
    *, profile: Profile, values: dict[str, str | None], occurred_at: datetime, source_key: str
) -> bool:
    """An event's identity fields on a profile not inserted yet (the insert writes them). Returns whether any."""
    applied, _ = _fields_event_merge(profile=profile, values=values, occurred_at=occurred_at, source_key=source_key)
    return bool(applied)


def profile_fields_apply_event(
    *,
    profile: Profile,
    values: dict[str, str | None],
    occurred_at: datetime,
    source_key: str,
    source_event_id: int | None,
    announce: bool,
    extra_data: dict | None = None,
    observation: dict | None = None,
) -> bool:
    """Apply an event's identity fields under the provenance rule. The caller holds the profile lock
    and passes a fresh `profile`.

    With `announce`, a `PROFILE_UPDATED` activity records every field whose value differs from the
    stored one (old, new, applied) and `extra_data` (an identity conflict, a consent disagreement);
    `observation` (the reported consent flags) is added to that activity but never causes one.
    Returns whether anything was written to the profile.
    """
    applied, changes = _fields_event_merge(
        profile=profile, values=values, occurred_at=occurred_at, source_key=source_key
    )
    if applied:
        Profile.objects.filter(pk=profile.pk).update(
            **{field: getattr(profile, field) for field in applied},
            field_sources=profile.field_sources,
            updated_at=timezone.now(),
        )
    if announce and (changes or extra_data):
        data = {"changes": changes, "source_key": source_key, **(observation or {}), **(extra_data or {})}
        unapplied_repeat = (
            source_event_id is None
            and not applied
            and Activity.objects.filter(
                profile_id=profile.pk, type=ActivityType.PROFILE_UPDATED, data__source_key=source_key
            ).exists()
        )
        if not unapplied_repeat:  # a re-imported backfill row does not repeat its note
            Activity.objects.create(
                tenant_id=profile.tenant_id,
                profile_id=profile.pk,
                type=ActivityType.PROFILE_UPDATED,
                occurred_at=occurred_at,
                data=data,
                source_event_id=source_event_id,
            )
    return bool(applied)


def _later_report(new: dict, old: dict | None) -> bool:
    return old is None or (new["at"], new["event"]) > (str(old.get("at", "")), str(old.get("event", "")))


def consent_reports_record(
    *, profile: Profile, reported: dict[str, bool], occurred_at: datetime, source_key: str
) -> bool:
    """Keep what `contact.updated` reported per channel (module doc). The caller holds the profile
    lock and passes a fresh `profile`. Returns whether a report was newer than the stored one."""
    reports = dict(profile.consent_reports or {})
    changed = False
    for channel, opted_in in reported.items():
        report = {"opted_in": opted_in, "at": stamp(occurred_at), "event": source_key}
        if _later_report(report, reports.get(channel)):
            reports[channel] = report
            changed = True
    if changed:
        profile.consent_reports = reports
        Profile.objects.filter(pk=profile.pk).update(consent_reports=reports)
    return changed


@dataclass(frozen=True)
class ConsentDisagreement:
    channel: str
    reported: bool
    reported_at: str
    crm: bool | None

    def __str__(self) -> str:
        return f"Messaging reports {self.channel}OptIn={str(self.reported).lower()} since {self.reported_at}"


def consent_report_disagreements(*, profile: Profile) -> list[ConsentDisagreement]:
    """The channels where the Messaging service's latest `contact.updated` report differs from the
    CRM's consent, for staff to follow up."""
    disagreements = []
    for channel, report in sorted((profile.consent_reports or {}).items()):
        crm = profile.opt_in(channel)
        if isinstance(report, dict) and report.get("opted_in") != crm:
            disagreements.append(
                ConsentDisagreement(channel, bool(report.get("opted_in")), str(report.get("at", "")), crm)
            )
    return disagreements


_INVALIDATE_SQL = """
UPDATE crm_profile
SET {field} = false,
    field_sources = jsonb_set(COALESCE(field_sources, '{{}}'::jsonb), '{{{field}}}', %s::jsonb)
WHERE id = %s AND (
    NOT (COALESCE(field_sources, '{{}}'::jsonb) ? '{field}')
    OR (field_sources -> '{field}' ->> 'by' = 'staff'
        AND (field_sources -> '{field}' ->> 'at') COLLATE "C" < %s::text COLLATE "C")
    OR (field_sources -> '{field}' ->> 'by' IS DISTINCT FROM 'staff'
        AND ((field_sources -> '{field}' ->> 'at') COLLATE "C",
             COALESCE(field_sources -> '{field}' ->> 'event', '') COLLATE "C")
            <= (%s::text COLLATE "C", %s::text COLLATE "C"))
)
"""


def profile_verification_invalidate(*, profile: Profile, field: str, occurred_at: datetime, source_key: str) -> bool:
    """An event says the address (`email_verified`) or number (`phone_verified`) is bad.

    One atomic UPDATE (no read-modify-write of `field_sources`). Returns whether the flag changed
    from not-False to False (then segment membership is recomputed).
    """
    if field not in VERIFICATION_FIELDS:
        raise ValueError(field)
    at = stamp(occurred_at)
    source = json.dumps({"by": "event", "at": at, "event": source_key})
    with connection.cursor() as cursor:
        cursor.execute(
            _INVALIDATE_SQL.format(field=field),
            [source, profile.pk, at, at, source_key],
        )
        updated = cursor.rowcount > 0
    before = getattr(profile, field)
    if not updated:
        return False
    setattr(profile, field, False)
    if before is not False:
        segment_membership_refresh(profile=profile)
        return True
    return False


def profile_merge_fields(*, source: Profile, target: Profile) -> dict:
    """The field values and provenance `target` takes over from `source` when they merge (not saved).

    Identity fields: staff beats event, and among events the earliest wins (as if both profiles'
    events had been applied to one). Verification: the statement that occurred last wins.
    """
    merged: dict = {}
    sources = dict(target.field_sources or {})
    source_sources = source.field_sources or {}
    for field in IDENTITY_FIELDS:
        theirs, ours = getattr(source, field), getattr(target, field)
        if not theirs:
            continue
        their_src, our_src = source_sources.get(field), sources.get(field)
        take = False
        if not ours:
            take = True
        elif their_src and our_src:
            if their_src.get("by") == "staff" and our_src.get("by") != "staff":
                take = True
            elif their_src.get("by") == our_src.get("by") == "event":
                take = (their_src.get("at", ""), their_src.get("event", "")) < (
                    our_src.get("at", ""),
                    our_src.get("event", ""),
                )
        if take:
            merged[field] = theirs
            if their_src:
                sources[field] = their_src
            else:
                sources.pop(field, None)
    for field in VERIFICATION_FIELDS:
        their_src, our_src = source_sources.get(field), sources.get(field)
        theirs = getattr(source, field)
        if theirs is None:
            continue
        if getattr(target, field) is None or (
            their_src and our_src and str(their_src.get("at", "")) > str(our_src.get("at", ""))
        ):
            merged[field] = theirs
            if their_src:
                sources[field] = their_src
    merged["field_sources"] = sources
    reports = dict(target.consent_reports or {})
    for channel, report in (source.consent_reports or {}).items():
        if _later_report(report, reports.get(channel)):
            reports[channel] = report
    merged["consent_reports"] = reports
    return merged


@transaction.atomic(savepoint=False)
def profile_update_by_staff(*, profile: Profile, changes: dict[str, Any], user) -> None:
    """A staff edit. Identity fields and verification flags are marked as set by staff (events never
    overwrite them); a `PROFILE_UPDATED` activity records old and new values; a new email or phone
    rebuilds consent for it (crm.services.consent); segment membership is recomputed when verification
    or a consent flag changes."""
    unknown = sorted(set(changes) - set(STAFF_EDITABLE))
    if unknown:
        raise ApplicationError(
            f"not editable here: {', '.join(unknown)} (consent changes go through 'Record consent change')"
        )
    fresh = profile_lock_get(profile.pk)
    now = timezone.now()
    sources = dict(fresh.field_sources or {})
    updates: dict[str, object] = {}
    record: dict[str, dict] = {}
    for field, value in changes.items():
        if field == "email":
            value = email_normalise(value or "")
        elif field == "phone":
            value = phone_normalise(value or "")
        elif field in ("first_name", "last_name"):
            value = (value or "").strip()
        elif value is not None and not isinstance(value, bool):
            raise ApplicationError(f"{field} must be true, false or unknown")
        old = getattr(fresh, field)
        sources[field] = {"by": "staff", "at": stamp(now), "user": getattr(user, "pk", None)}
        if old != value:
            record[field] = {"old": old, "new": value}
        updates[field] = value
    if not updates:
        return
    Profile.objects.filter(pk=profile.pk).update(**updates, field_sources=sources, updated_at=now)
    for field, value in {**updates, "field_sources": sources}.items():
        setattr(profile, field, value)
    if record:
        Activity.objects.create(
            tenant_id=fresh.tenant_id,
            profile_id=fresh.pk,
            type=ActivityType.PROFILE_UPDATED,
            occurred_at=now,
            data={"changes": record, "by": "staff", "user": getattr(user, "pk", None)},
        )
    if "email" in record or "phone" in record:
        # Consent belongs to the address: the new one's is unknown until a statement covers it.
        consent_follow_addresses(profile=profile, profile_address_changed=True)
    if any(field in record for field in VERIFICATION_FIELDS):
        segment_membership_refresh(profile=profile)
