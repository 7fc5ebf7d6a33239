"""Consent: an append-only ledger (ConsentChange) and the state it decides (MarketingConsent + profile flag).

Rules (docs/decisions.md):

- Every statement is appended to the ledger, applied or not. A statement's identity is its
  `tiebreak` (source, source key and occurred-at), unique per profile and channel, so recording the
  same statement twice changes nothing.
- The current state of a channel is the statement with the greatest `(occurred_at, tiebreak)`.
  A statement older than the one in force when it arrives is stored with `superseded=True`.
  Orderings are compared in Python, never with the database collation.
- `CONSENT_OPTED_IN` / `CONSENT_OPTED_OUT` activities mark each ledger statement whose value differs
  from the previous one in `(occurred_at, tiebreak)` order. A statement that lands in the middle of
  the history reconciles the channel's consent activities from the ledger.
- A real change of the flag recomputes the profile's segment membership.
"""

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from crm.errors import ApplicationError
from crm.models import (
    Activity,
    ActivityType,
    Channel,
    ConsentChange,
    ConsentSource,
    MarketingConsent,
    Profile,
)
from crm.services.locks import profile_lock

TIEBREAK_MAX = 160
CONSENT_ACTIVITY_TYPES = (ActivityType.CONSENT_OPTED_IN, ActivityType.CONSENT_OPTED_OUT)


@dataclass(frozen=True)
class ConsentResult:
    recorded: bool  # a new ledger row was appended (False: this statement was already recorded)
    applied: bool  # it became the statement in force
    changed: bool  # the channel's value changed


def consent_tiebreak(*, source: str, source_key: str, occurred_at: datetime) -> str:
    """A statement's identity and ordering key among statements with the same occurred-at."""
    micros = int(occurred_at.timestamp() * 1_000_000)
    tiebreak = f"{source}:{source_key}@{micros}"
    if len(tiebreak) > TIEBREAK_MAX:
        tiebreak = f"{source}:sha256:{hashlib.sha256(tiebreak.encode()).hexdigest()}"
    return tiebreak


_INSERT_SQL = """
INSERT INTO crm_consentchange
    (tenant_id, profile_id, channel, opted_in, occurred_at, recorded_at, source, source_event_id,
     actor_id, lawful_basis, superseded, tiebreak)
VALUES (%s, %s, %s, %s, %s, now(), %s, %s, %s, %s, %s, %s)
ON CONFLICT (profile_id, channel, tiebreak) DO NOTHING
RETURNING id
"""


def _activity_type(opted_in: bool) -> str:
    return ActivityType.CONSENT_OPTED_IN if opted_in else ActivityType.CONSENT_OPTED_OUT


def _activity_data(*, change_id: int, channel: str, opted_in: bool, source: str) -> dict:
    return {"channel": channel, "opted_in": opted_in, "source": source, "consent_change_id": change_id}


@transaction.atomic(savepoint=False)
def consent_statement_record(
    *,
    profile: Profile,
    channel: str,
    opted_in: bool,
    occurred_at: datetime,
    source: str,
    source_key: str,
    source_event_id: int | None = None,
    actor_id: int | None = None,
    lawful_basis: str = "",
) -> ConsentResult:
    """Append one consent statement and apply it last-writer-wins. Idempotent per statement."""
    if channel not in Channel.values:
        raise ApplicationError(f"unknown consent channel {channel!r}")
    tiebreak = consent_tiebreak(source=source, source_key=source_key, occurred_at=occurred_at)
    profile_lock(profile.pk)
    state = (
        MarketingConsent.objects.select_related("deciding_change")
        .filter(profile_id=profile.pk, channel=channel)
        .first()
    )
    deciding = state.deciding_change if state is not None else None
    newest = deciding is None or (occurred_at, tiebreak) > (deciding.occurred_at, deciding.tiebreak)
    with connection.cursor() as cursor:
        cursor.execute(
            _INSERT_SQL,
            [
                profile.tenant_id,
                profile.pk,
                channel,
                opted_in,
                occurred_at,
                source,
                source_event_id,
                actor_id,
                lawful_basis[:300],
                not newest,
                tiebreak,
            ],
        )
        row = cursor.fetchone()
    if row is None:
        return ConsentResult(recorded=False, applied=False, changed=False)
    change_id = row[0]
    if not newest:
        _activities_reconcile(profile=profile, channel=channel)
        return ConsentResult(recorded=True, applied=False, changed=False)

    previous = state.opted_in if state is not None else None
    if state is None:
        MarketingConsent.objects.create(
            tenant_id=profile.tenant_id,
            profile_id=profile.pk,
            channel=channel,
            opted_in=opted_in,
            changed_at=occurred_at,
            source=source,
            deciding_change_id=change_id,
        )
    else:
        MarketingConsent.objects.filter(pk=state.pk).update(
            opted_in=opted_in, changed_at=occurred_at, source=source, deciding_change_id=change_id
        )
    changed = previous != opted_in
    if changed:
        Profile.objects.filter(pk=profile.pk).update(**{f"{channel}_opt_in": opted_in})
        setattr(profile, f"{channel}_opt_in", opted_in)
        Activity.objects.create(
            tenant_id=profile.tenant_id,
            profile_id=profile.pk,
            type=_activity_type(opted_in),
            occurred_at=occurred_at,
            data=_activity_data(change_id=change_id, channel=channel, opted_in=opted_in, source=source),
            source_event_id=source_event_id,
        )
        from crm.services.segments import segment_membership_refresh

        segment_membership_refresh(profile=profile)
    return ConsentResult(recorded=True, applied=True, changed=changed)


def _ledger(*, profile_id: int, channel: str) -> list[ConsentChange]:
    changes = list(ConsentChange.objects.filter(profile_id=profile_id, channel=channel))
    changes.sort(key=lambda c: (c.occurred_at, c.tiebreak))
    return changes


def _activities_reconcile(*, profile: Profile, channel: str, ledger: list[ConsentChange] | None = None) -> None:
    """Make the channel's consent activities mark exactly the ledger's real changes (in occurred-at order)."""
    ledger = ledger if ledger is not None else _ledger(profile_id=profile.pk, channel=channel)
    wanted: dict[int, ConsentChange] = {}
    previous: bool | None = None
    for change in ledger:
        if change.opted_in != previous:
            wanted[change.pk] = change
        previous = change.opted_in
    existing = Activity.objects.filter(
        profile_id=profile.pk, type__in=CONSENT_ACTIVITY_TYPES, data__channel=channel
    ).only("pk", "type", "data")
    keep: set[int] = set()
    stale: list[int] = []
    for activity in existing:
        change_id = (activity.data or {}).get("consent_change_id")
        change = wanted.get(change_id)
        if change is not None and change_id not in keep and activity.type == _activity_type(change.opted_in):
            keep.add(change_id)
        else:
            stale.append(activity.pk)
    if stale:
        Activity.objects.filter(pk__in=stale).delete()
    missing = [change for change_id, change in wanted.items() if change_id not in keep]
    if missing:
        Activity.objects.bulk_create(
            Activity(
                tenant_id=profile.tenant_id,
                profile_id=profile.pk,
                type=_activity_type(change.opted_in),
                occurred_at=change.occurred_at,
                data=_activity_data(
                    change_id=change.pk, channel=channel, opted_in=change.opted_in, source=change.source
                ),
                source_event_id=change.source_event_id,
            )
            for change in missing
        )


@transaction.atomic(savepoint=False)
def consent_state_recompute(*, profile: Profile) -> bool:
    """Rebuild every channel's state and consent activities from the ledger (after a merge).

    Returns whether any profile flag changed.
    """
    profile_lock(profile.pk)
    states = {s.channel: s for s in MarketingConsent.objects.filter(profile_id=profile.pk)}
    flags: dict[str, bool | None] = {}
    for channel in Channel.values:
        ledger = _ledger(profile_id=profile.pk, channel=channel)
        state = states.get(channel)
        if not ledger:
            if state is not None:
                state.delete()
            flags[f"{channel}_opt_in"] = None
            continue
        last = ledger[-1]
        values = {"opted_in": last.opted_in, "changed_at": last.occurred_at, "source": last.source}
        if state is None:
            MarketingConsent.objects.create(
                tenant_id=profile.tenant_id, profile_id=profile.pk, channel=channel, deciding_change=last, **values
            )
        else:
            MarketingConsent.objects.filter(pk=state.pk).update(deciding_change=last, **values)
        flags[f"{channel}_opt_in"] = last.opted_in
        _activities_reconcile(profile=profile, channel=channel, ledger=ledger)
    changed = any(getattr(profile, name) != value for name, value in flags.items())
    Profile.objects.filter(pk=profile.pk).update(**flags)
    for name, value in flags.items():
        setattr(profile, name, value)
    return changed


def consent_record_by_staff(*, profile: Profile, channel: str, opted_in: bool, user, lawful_basis: str) -> None:
    """A staff member records a consent change by hand: same ledger and last-writer-wins path,
    source "admin", with the user, occurring now."""
    if channel not in Channel.values:
        raise ApplicationError(f"unknown consent channel {channel!r}")
    if not isinstance(opted_in, bool):
        raise ApplicationError("opted_in must be true or false")
    consent_statement_record(
        profile=profile,
        channel=channel,
        opted_in=opted_in,
        occurred_at=timezone.now(),
        source=ConsentSource.ADMIN,
        source_key=f"staff:{getattr(user, 'pk', None)}:{uuid.uuid4().hex}",
        actor_id=getattr(user, "pk", None),
        lawful_basis=lawful_basis or "",
    )
