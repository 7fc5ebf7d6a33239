"""Consent: an append-only ledger (ConsentChange) and the state it decides (MarketingConsent + profile flag).

Rules (docs/decisions.md):

- Every statement is appended to the ledger, applied or not. A statement's identity is its
  `tiebreak` (source, source key and occurred-at), unique per profile and channel, so recording the
  same statement twice changes nothing.
- Each statement is about an address (crm.services.contact_points): the one its event states, else
  the one its contact had at occurred-at, else (staff) the profile's current one. A channel's state
  counts only the statements about the address the profile holds now: a statement about another
  address is recorded and changes nothing, and when the profile's address changes the state is
  rebuilt from the ledger for the new address (unknown until a statement covers it).
- The current state of a channel is the statement with the greatest `consent_order_key`
  (crm.services.consent_order). A statement that did not become the state when it arrived (older, or about
  another address) is stored with `superseded=True`. Orderings are compared in Python.
- `CONSENT_OPTED_IN` / `CONSENT_OPTED_OUT` activities mark each ledger statement whose value differs
  from the previous statement about the same address, in that order. A statement that lands in the
  middle of a history reconciles the channel's consent activities from the ledger
  (crm.services.consent_rebuild, which also rebuilds the state when addresses move).
- A real change of the flag recomputes the profile's segment membership.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

from django.db import connection, transaction
from django.utils import timezone

from crm.errors import ApplicationError
from crm.models import (
    Channel,
    ConsentChange,
    ConsentSource,
    MarketingConsent,
    Profile,
)
from crm.normalise import email_normalise, phone_normalise
from crm.services.consent_order import consent_order_key, consent_tiebreak
from crm.services.consent_rebuild import (
    consent_activities_reconcile,
    consent_activity_type,
    consent_state_recompute,
)
from crm.services.contact_points import (
    address_as_of,
    address_kind,
    profile_lock_addresses,
)
from crm.services.prepared import prepared_cursor
from crm.services.recordsets import recordset_json
from crm.services.segments import SEGMENT_RULE_COLUMNS, segment_membership_refresh_ctes


@dataclass(frozen=True)
class ConsentResult:
    recorded: bool  # a new ledger row was appended (False: this statement was already recorded)
    applied: bool  # it became the statement in force
    changed: bool  # the channel's value changed


def _inferred_kinds(*, addresses: dict[str, str | None], contact_id: str) -> set[str]:
    """The address kinds whose history the statements need: a channel with an address that states none,
    from a contact (module doc)."""
    return {
        kind
        for channel, address in addresses.items()
        if (kind := address_kind(channel)) is not None and not address and contact_id
    }


def _statement_addresses(
    *,
    addresses: dict[str, str | None],
    histories: dict[str, list[tuple[datetime, str, str]]],
    occurred_at: datetime,
    current: dict[str, str],
) -> dict[str, tuple[str, bool]]:
    """(address, stated) of each channel's new statement (module doc), given the contact's address
    `histories` of `_inferred_kinds`."""
    result: dict[str, tuple[str, bool]] = {}
    for channel, address in addresses.items():
        kind = address_kind(channel)
        if kind is None:
            result[channel] = ("", True)
        elif address:
            result[channel] = (email_normalise(address) if kind == "email" else phone_normalise(address)), True
        elif kind in histories:
            result[channel] = address_as_of(histories[kind], occurred_at), False
        else:
            result[channel] = current[channel], True
    return result


_STATE_COLUMNS = [field.column for field in MarketingConsent._meta.concrete_fields]
_CHANGE_COLUMNS = [field.column for field in ConsentChange._meta.concrete_fields]
# The contact's address histories of some kinds (as arrays, one row whatever their length) and the
# profile's states in force of some channels with their deciding statements, in one round trip.
_CONTEXT_SQL = f"""
SELECT h.kinds, h.times, h.keys, h.addresses, {", ".join(f"m.{c}" for c in _STATE_COLUMNS)},
       {", ".join(f"c.{c}" for c in _CHANGE_COLUMNS)}
FROM (SELECT array_agg(a.kind) AS kinds, array_agg(a.occurred_at) AS times, array_agg(a.source_key) AS keys,
             array_agg(a.address) AS addresses
      FROM crm_contactaddress a WHERE a.contact_id = %(contact)s AND a.kind = ANY(%(kinds)s::text[])) h
LEFT JOIN crm_marketingconsent m ON %(states)s AND m.profile_id = %(profile)s AND m.channel = ANY(%(channels)s::text[])
LEFT JOIN crm_consentchange c ON c.id = m.deciding_change_id
"""


def _statement_context(
    *, profile_id: int, channels: list[str], contact_id: str, kinds: set[str], read_states: bool
) -> tuple[dict[str, list[tuple[datetime, str, str]]], dict[str, MarketingConsent]]:
    """The contact's address histories of `kinds` (as `contact_points.contact_histories`) and, when
    `read_states`, the channels' states in force with their deciding statements, in one query (none when
    neither is needed)."""
    histories: dict[str, list[tuple[datetime, str, str]]] = {kind: [] for kind in kinds}
    states: dict[str, MarketingConsent] = {}
    if not kinds and not read_states:
        return histories, states
    params: dict[str, Any] = {
        "contact": contact_id,
        "kinds": sorted(kinds),
        "states": read_states,
        "profile": profile_id,
        "channels": channels,
    }
    with prepared_cursor() as cursor:
        cursor.execute(_CONTEXT_SQL, params)
        rows = cursor.fetchall()
    kinds_found, times, keys, stated = rows[0][:4]
    for kind, occurred_at, source_key, address in zip(
        kinds_found or [], times or [], keys or [], stated or [], strict=True
    ):
        histories[kind].append((occurred_at, source_key, address))
    for history in histories.values():
        history.sort()
    for row in rows:
        state_values = row[4 : 4 + len(_STATE_COLUMNS)]
        if state_values[0] is None:
            continue  # no state (the one row of the histories)
        state = MarketingConsent.from_db(connection.alias, _STATE_COLUMNS, state_values)
        change_values = row[4 + len(_STATE_COLUMNS) :]
        state.deciding_change = (
            None
            if change_values[0] is None
            else ConsentChange.from_db(connection.alias, _CHANGE_COLUMNS, change_values)
        )
        states[state.channel] = state
    return histories, states


def _clock_warning(*, occurred_at: datetime, received_at: datetime | None) -> str:
    if received_at is None or occurred_at <= received_at:
        return ""
    return (
        f"occurred-at {occurred_at.isoformat()} is later than its receipt at {received_at.isoformat()}: "
        "ordered at the receipt"
    )


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
    address: str | None = None,
    contact_id: str = "",
    received_at: datetime | None = None,
) -> ConsentResult:
    """Append one consent statement and apply it last-writer-wins. Idempotent per statement.

    `address`: the email or phone the statement states (None: the address `contact_id` had at
    `occurred_at`, or without a contact the profile's current one). `received_at`: when the pipeline
    received it (the job timestamp); a later `occurred_at` is ordered at it, with a warning.
    """
    return consent_statements_record(
        profile=profile,
        opt_ins={channel: opted_in},
        addresses={channel: address},
        occurred_at=occurred_at,
        source=source,
        source_key=source_key,
        source_event_id=source_event_id,
        actor_id=actor_id,
        lawful_basis=lawful_basis,
        contact_id=contact_id,
        received_at=received_at,
    )[channel]


class _StatementContext(TypedDict):
    """What the statements of one event share: `consent_statements_record`'s keyword arguments of that name."""

    occurred_at: datetime
    source: str
    source_key: str
    source_event_id: int | None
    actor_id: int | None
    lawful_basis: str
    contact_id: str
    received_at: datetime | None


@transaction.atomic(savepoint=False)
def consent_statements_record(
    *,
    profile: Profile,
    opt_ins: dict[str, bool],
    addresses: dict[str, str | None],
    occurred_at: datetime,
    source: str,
    source_key: str,
    source_event_id: int | None = None,
    actor_id: int | None = None,
    lawful_basis: str = "",
    contact_id: str = "",
    received_at: datetime | None = None,
    current: dict[str, str] | None = None,
    new_profile: bool = False,
) -> dict[str, ConsentResult]:
    """One event's statements, one per channel (`opt_ins`; `addresses[channel]` as for
    `consent_statement_record`), with exactly the effect of recording them one by one in channel order,
    in a fixed number of statements: the channels are independent of each other, except that a channel
    whose state is inconsistent rebuilds every channel's state first (then they go one by one).

    `current`: the profile's address per channel (`contact_points.profile_addresses`) when the caller
    already holds the profile lock and a fresh profile; otherwise the lock is taken and they are read.
    `new_profile`: the profile was inserted in this transaction, so it has no consent state to read.
    """
    channels = sorted(opt_ins)
    for channel in channels:
        if channel not in Channel.values:
            raise ApplicationError(f"unknown consent channel {channel!r}")
    if not channels:
        return {}
    common: _StatementContext = {
        "occurred_at": occurred_at,
        "source": source,
        "source_key": source_key,
        "source_event_id": source_event_id,
        "actor_id": actor_id,
        "lawful_basis": lawful_basis,
        "contact_id": contact_id,
        "received_at": received_at,
    }
    tiebreak = consent_tiebreak(source=source, source_key=source_key, occurred_at=occurred_at)
    current = current if current is not None else profile_lock_addresses(profile_id=profile.pk)
    stated_addresses = {channel: addresses.get(channel) for channel in channels}
    histories, states = _statement_context(
        profile_id=profile.pk,
        channels=channels,
        contact_id=contact_id,
        kinds=_inferred_kinds(addresses=stated_addresses, contact_id=contact_id),
        read_states=not new_profile,  # a profile inserted in this transaction has no consent state yet
    )
    stated = _statement_addresses(
        addresses=stated_addresses, histories=histories, occurred_at=occurred_at, current=current
    )
    consistent = {
        channel: (state := states.get(channel)) is None
        or (state.address == current[channel] and state.deciding_change is not None)
        for channel in channels
    }
    if len(channels) > 1 and not all(consistent.values()):
        # Rare: recording the inconsistent channel rebuilds the state the next channel is judged against.
        results: dict[str, ConsentResult] = {}
        for channel in channels:
            results |= consent_statements_record(
                profile=profile,
                opt_ins={channel: opt_ins[channel]},
                addresses={channel: addresses.get(channel)},
                current=current,
                **common,
            )
        return results
    warning = _clock_warning(occurred_at=occurred_at, received_at=received_at)[:300]
    changes: dict[str, ConsentChange] = {}
    newest: dict[str, bool] = {}
    for channel in channels:
        address, address_stated = stated[channel]
        change = ConsentChange(
            tenant_id=profile.tenant_id,
            profile_id=profile.pk,
            channel=channel,
            opted_in=opt_ins[channel],
            occurred_at=occurred_at,
            source=source,
            source_event_id=source_event_id,
            actor_id=actor_id,
            lawful_basis=lawful_basis[:300],
            tiebreak=tiebreak,
            address=address,
            address_stated=address_stated,
            contact_id=contact_id,
            received_at=received_at,
            warning=warning,
        )
        state = states.get(channel)
        deciding = state.deciding_change if state is not None else None
        newest[channel] = (
            address == current[channel]
            and consistent[channel]
            and (deciding is None or consent_order_key(change) > consent_order_key(deciding))
        )
        changes[channel] = change
    states_in_force = {channel: states.get(channel) for channel in channels if newest[channel]}
    recorded = _record_and_decide(profile=profile, changes=changes, decide=states_in_force)
    results = {channel: ConsentResult(recorded=False, applied=False, changed=False) for channel in channels}
    for channel in channels:
        if channel not in recorded:
            continue
        change = changes[channel]
        change.pk = recorded[channel]
        if not consistent[channel]:  # the only channel (see above)
            rebuilt = consent_state_recompute(profile=profile)
            results[channel] = ConsentResult(recorded=True, applied=False, changed=rebuilt)
        elif not newest[channel]:
            consent_activities_reconcile(profile=profile, channel=channel)
            results[channel] = ConsentResult(recorded=True, applied=False, changed=False)
        else:
            changed = _changes_value(change, states_in_force[channel])
            if changed:
                setattr(profile, f"{channel}_opt_in", change.opted_in)
            results[channel] = ConsentResult(recorded=True, applied=True, changed=changed)
    return results


def _changes_value(change: ConsentChange, state: MarketingConsent | None) -> bool:
    """Whether a statement in force changes its channel's value (from no state, always)."""
    return state is None or state.opted_in != change.opted_in


_LEDGER_COLUMNS = (
    ("tenant_id", "bigint"),
    ("profile_id", "bigint"),
    ("channel", "text"),
    ("opted_in", "boolean"),
    ("occurred_at", "timestamptz"),
    ("source", "text"),
    ("source_event_id", "bigint"),
    ("actor_id", "bigint"),
    ("lawful_basis", "text"),
    ("superseded", "boolean"),
    ("tiebreak", "text"),
    ("address", "text"),
    ("address_stated", "boolean"),
    ("contact_id", "text"),
    ("received_at", "timestamptz"),
    ("warning", "text"),
)
# The profile's opt-in flag column of each channel.
_FLAG_COLUMNS = {
    field.name.removesuffix("_opt_in"): field.column
    for field in Profile._meta.concrete_fields
    if field.name.endswith("_opt_in") and field.name.removesuffix("_opt_in") in Channel.values
}
# One event's statements (`s`, one row per channel) appended to the ledger and, for those to decide
# (`decide`: the statement is the newest about the address the profile holds) and actually appended
# (not already recorded), made the state in force: the `MarketingConsent` row (inserted, or the existing
# `state_id` updated), and where the value changes (`changes`) the profile's flag, a consent activity
# and the profile's segment memberships, judged on the flags as updated. One statement: every CTE sees
# the snapshot the statement started with, so each reads only the ledger's RETURNING, never the tables
# another CTE writes, and no row is written twice. The caller holds the profile lock.
_RECORD_SQL = f"""
WITH s AS (
    SELECT * FROM jsonb_to_recordset(%(rows)s::jsonb) AS s(
        ord int, {", ".join(f"{name} {sql_type}" for name, sql_type in _LEDGER_COLUMNS)},
        decide boolean, state_id bigint, changes boolean, activity_type text)
),
ledger AS (
    INSERT INTO crm_consentchange ({", ".join(name for name, _ in _LEDGER_COLUMNS)}, recorded_at)
    SELECT {", ".join(name for name, _ in _LEDGER_COLUMNS)}, now() FROM s ORDER BY ord
    ON CONFLICT (profile_id, channel, tiebreak) DO NOTHING
    RETURNING channel, id
),
decided AS (SELECT s.*, ledger.id AS change_id FROM s JOIN ledger USING (channel) WHERE s.decide),
new_states AS (
    INSERT INTO crm_marketingconsent
        (tenant_id, profile_id, channel, opted_in, changed_at, source, deciding_change_id, address)
    SELECT tenant_id, profile_id, channel, opted_in, occurred_at, source, change_id, address
    FROM decided WHERE state_id IS NULL ORDER BY ord
),
states AS (
    UPDATE crm_marketingconsent m SET
        opted_in = d.opted_in, changed_at = d.occurred_at, source = d.source, address = d.address,
        deciding_change_id = d.change_id
    FROM decided d WHERE m.id = d.state_id
),
activities AS (
    INSERT INTO crm_activity (tenant_id, profile_id, type, occurred_at, data, source_event_id, created_at)
    SELECT tenant_id, profile_id, activity_type, occurred_at,
        jsonb_build_object('channel', channel, 'opted_in', opted_in, 'source', source, 'address', address,
                           'consent_change_id', change_id),
        source_event_id, now()
    FROM decided WHERE changes ORDER BY ord
),
flagged AS (
    UPDATE crm_profile p SET {
    ", ".join(
        f"{column} = COALESCE((SELECT opted_in FROM decided WHERE changes AND channel = '{channel}'), p.{column})"
        for channel, column in _FLAG_COLUMNS.items()
    )
}
    WHERE p.id = %(profile)s AND EXISTS (SELECT 1 FROM decided WHERE changes)
    RETURNING {", ".join(f"p.{column}" for column in SEGMENT_RULE_COLUMNS)}
),
{segment_membership_refresh_ctes("flagged")}
SELECT channel, id FROM ledger
"""


def _record_and_decide(
    *, profile: Profile, changes: dict[str, ConsentChange], decide: dict[str, MarketingConsent | None]
) -> dict[str, int]:
    """Append the statements (one per channel) and decide those in `decide` (channel: its state in force
    before, or None), in one statement (`_RECORD_SQL`); returns the new ledger rows' ids by channel (a
    statement already recorded has none, and decides nothing)."""
    rows = []
    for ord, (channel, change) in enumerate(changes.items()):
        state = decide.get(channel)
        row = {name: getattr(change, name) for name, _ in _LEDGER_COLUMNS}
        rows.append(
            row
            | {
                "ord": ord,
                "superseded": channel not in decide,
                "decide": channel in decide,
                "state_id": state.pk if state is not None else None,
                "changes": channel in decide and _changes_value(change, state),
                "activity_type": consent_activity_type(change.opted_in),
            }
        )
    with prepared_cursor() as cursor:
        cursor.execute(_RECORD_SQL, {"rows": recordset_json(rows), "profile": profile.pk})
        return dict(cursor.fetchall())


def consent_record_by_staff(*, profile: Profile, channel: str, opted_in: bool, user, lawful_basis: str) -> None:
    """A staff member records a consent change by hand: same ledger and last-writer-wins path,
    source "admin", with the user, occurring now."""
    if channel not in Channel.values:
        raise ApplicationError(f"unknown consent channel {channel!r}")
    if not isinstance(opted_in, bool):
        raise ApplicationError("opted_in must be true or false")
    now = timezone.now()
    consent_statement_record(
        profile=profile,
        channel=channel,
        opted_in=opted_in,
        occurred_at=now,
        received_at=now,
        source=ConsentSource.ADMIN,
        source_key=f"staff:{getattr(user, 'pk', None)}:{uuid.uuid4().hex}",
        actor_id=getattr(user, "pk", None),
        lawful_basis=lawful_basis or "",
    )
