"""Consent rebuilt from the ledger: the timeline's consent activities and the state in force.

The ledger (ConsentChange) is the evidence; the consent activities and each channel's state are
derived from it. They are rebuilt here when the ledger's meaning changes after the fact: a statement
lands in the middle of a history, a merge brings two ledgers together, or the address a statement
was about becomes known or changes (consent before contact, an email or phone change).

- `CONSENT_OPTED_IN` / `CONSENT_OPTED_OUT` activities mark each ledger statement whose value differs
  from the previous statement about the same address, in `consent_order_key` order, and name that
  address.
- A channel's state counts only the statements about the address the profile holds now.
"""

from django.db import transaction

from crm.models import Activity, ActivityType, Channel, ConsentChange, MarketingConsent, Profile
from crm.services.consent_order import consent_order_key
from crm.services.contact_points import address_as_of, address_kind, contact_histories, profile_lock_addresses
from crm.services.segments import segment_membership_refresh

CONSENT_ACTIVITY_TYPES = (ActivityType.CONSENT_OPTED_IN, ActivityType.CONSENT_OPTED_OUT)


def consent_activity_type(opted_in: bool) -> str:
    return ActivityType.CONSENT_OPTED_IN if opted_in else ActivityType.CONSENT_OPTED_OUT


def consent_activity_data(*, change: ConsentChange) -> dict:
    return {
        "channel": change.channel,
        "opted_in": change.opted_in,
        "source": change.source,
        "address": change.address,
        "consent_change_id": change.pk,
    }


def _activities_create(*, profile: Profile, changes: list[ConsentChange]) -> None:
    """One consent activity per ledger statement, in one insert."""
    Activity.objects.bulk_create(
        Activity(
            tenant_id=profile.tenant_id,
            profile_id=profile.pk,
            type=consent_activity_type(change.opted_in),
            occurred_at=change.occurred_at,
            data=consent_activity_data(change=change),
            source_event_id=change.source_event_id,
        )
        for change in changes
    )


def _ledger(*, profile_id: int, channel: str) -> list[ConsentChange]:
    changes = list(ConsentChange.objects.filter(profile_id=profile_id, channel=channel))
    changes.sort(key=consent_order_key)
    return changes


def consent_activities_reconcile(*, profile: Profile, channel: str, ledger: list[ConsentChange] | None = None) -> None:
    """Make the channel's consent activities mark exactly the ledger's real changes: per address, each
    statement whose value differs from the previous one about that address (in `consent_order_key` order)."""
    ledger = ledger if ledger is not None else _ledger(profile_id=profile.pk, channel=channel)
    wanted: dict[int, ConsentChange] = {}
    previous: dict[str, bool] = {}
    for change in ledger:
        if change.opted_in != previous.get(change.address):
            wanted[change.pk] = change
        previous[change.address] = change.opted_in
    existing = Activity.objects.filter(
        profile_id=profile.pk, type__in=CONSENT_ACTIVITY_TYPES, data__channel=channel
    ).only("pk", "type", "data")
    keep: set[int] = set()
    stale: list[int] = []
    for activity in existing:
        change_id = (activity.data or {}).get("consent_change_id")
        wanted_change = wanted.get(change_id) if change_id is not None else None
        if (
            wanted_change is not None
            and wanted_change.pk not in keep
            and activity.type == consent_activity_type(wanted_change.opted_in)
            # the statement's address became known after the activity was written (consent before contact)
            and activity.data.get("address") == wanted_change.address
        ):
            keep.add(wanted_change.pk)
        else:
            stale.append(activity.pk)
    if stale:
        Activity.objects.filter(pk__in=stale).delete()
    missing = [change for change_id, change in wanted.items() if change_id not in keep]
    if missing:
        _activities_create(profile=profile, changes=missing)


@transaction.atomic(savepoint=False)
def consent_state_recompute(*, profile: Profile) -> bool:
    """Rebuild every channel's state and consent activities from the ledger, for the addresses the
    profile holds now (after a merge, an address change, or a contact's address becoming known).

    Returns whether any profile flag changed.
    """
    current = profile_lock_addresses(profile_id=profile.pk)
    states = {s.channel: s for s in MarketingConsent.objects.filter(profile_id=profile.pk)}
    flags: dict[str, bool | None] = {}
    for channel in Channel.values:
        ledger = _ledger(profile_id=profile.pk, channel=channel)
        if ledger:
            consent_activities_reconcile(profile=profile, channel=channel, ledger=ledger)
        counted = [change for change in ledger if change.address == current[channel]]
        state = states.get(channel)
        if not counted:
            if state is not None:
                state.delete()
            flags[f"{channel}_opt_in"] = None
            continue
        last = counted[-1]
        values = {
            "opted_in": last.opted_in,
            "changed_at": last.occurred_at,
            "source": last.source,
            "address": last.address,
        }
        if state is None:
            MarketingConsent.objects.create(
                tenant_id=profile.tenant_id, profile_id=profile.pk, channel=channel, deciding_change=last, **values
            )
        else:
            MarketingConsent.objects.filter(pk=state.pk).update(deciding_change=last, **values)
        flags[f"{channel}_opt_in"] = last.opted_in
    changed = any(getattr(profile, name) != value for name, value in flags.items())
    Profile.objects.filter(pk=profile.pk).update(**flags)
    for name, value in flags.items():
        setattr(profile, name, value)
    return changed


def consent_follow_addresses(*, profile: Profile, contact_id: str = "", profile_address_changed: bool) -> bool:
    """Keep consent on the right contact point after an address became known or changed.

    Re-reads the address of each of `contact_id`'s statements that stated none
    (`contact_points.address_as_of`, after that contact's stated addresses grew); if any moved, or the
    profile's own address changed, rebuilds the consent state for the profile's current addresses
    and, if a flag changed, its segments. The caller holds the profile lock. Returns whether a flag
    changed.
    """
    moved = False
    if contact_id:
        rows = ConsentChange.objects.filter(contact_id=contact_id, address_stated=False).only(
            "pk", "channel", "occurred_at", "address"
        )
        inferred = [(change, kind) for change in rows if (kind := address_kind(change.channel)) is not None]
        kinds = {kind for _, kind in inferred}
        histories = contact_histories(contact_id=contact_id, kinds=kinds) if kinds else {}
        for change, kind in inferred:
            address = address_as_of(histories[kind], change.occurred_at)
            if address != change.address:
                ConsentChange.objects.filter(pk=change.pk).update(address=address)
                moved = True
    if not (moved or profile_address_changed):
        return False
    changed = consent_state_recompute(profile=profile)
    if changed:
        segment_membership_refresh(profile=profile)
    return changed
