"""The bulk path of `backfill_contacts`: plan a chunk of rows set-based, write the new people in a few statements.

Planning reads the chunk's tenants, contact links and address matches in three queries, then gives
each valid row a disposition (docs/decisions.md, "Backfill: the bulk path"):

- "new": the contactId has no link, no profile of its tenant has the row's email or phone, and no
  other row of the chunk shares its contactId, email, phone or any profile those reach.
  `contact_statement_apply` would create a real profile, link it, fill the fields and record each opt-in as
  the first statement of its channel: `new_contacts_write` writes exactly that for many rows at once.
- "unchanged": the contactId is linked (in the row's tenant) to a real profile whose fields already
  hold the row's values under the provenance rule, and whose ledger already holds each of the row's
  statements, and no other row of the chunk reaches that profile. `contact_statement_apply` would write
  nothing: nothing is written.
- "row": everything else (a shared person, a stub, an existing profile to link or update, a tenant
  mismatch) goes through `contact_statement_apply` itself, in file order, so its rules apply unchanged.

A chunk's steps keep file order: runs of new/unchanged/rejected rows between rows of the "row" kind.
Rows planned "new" share nothing with any other row of the chunk, so writing a run together gives
the same result as writing its rows one after another.
"""

import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, models
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from crm.models import ConsentSource, Profile
from crm.services.backfill import Item, Step
from crm.services.consent_order import consent_tiebreak
from crm.services.contact_points import address_kind
from crm.services.contacts import MESSAGING_LAWFUL_BASIS, ContactStatement
from crm.services.prepared import prepared_cursor
from crm.services.profiles import _event_may_set, stamp
from crm.services.segments import SEGMENT_RULE_COLUMNS, segment_membership_refresh_ctes
from crm.services.tenants import tenants_create

IDENTITY_FIELDS = ("email", "phone", "first_name", "last_name")


# Every statement here runs on `prepared_cursor`: parameters bound on the server, where Django's
# client-side binding quotes every array element in Python; the arrays are `%b`, sent in binary
# (psycopg's text format quotes each element too, ten times slower: about 1 s for the 30,000 tiebreaks
# of a 20,000-row file). Prepared at their first execution (each chunk runs the same statements), except
# the email and phone lookups, whose plan must see the values (_MATCHES_SQL; docs/decisions.md,
# "Backfill CPU per row").


@dataclass(frozen=True)
class _Linked:
    tenant_id: int
    profile_id: int
    is_stub: bool
    fields: dict[str, str]
    field_sources: dict


@dataclass
class _Lookups:
    tenants: dict[str, int]  # external id -> id
    links: dict[str, _Linked]  # contact id -> its link
    by_email: dict[tuple[int, str], list[int]]  # (tenant id, email) -> profile ids
    by_phone: dict[tuple[int, str], list[int]]


# Contact ids are unique: one index probe per id of the chunk, whatever the size of the table, in a
# LATERAL subquery the planner cannot flatten (OFFSET 0). Joined to 5,000 ids, it preferred hashing a
# sequential scan of every link (0.2 s at 220,000 links, growing with the table).
_LINKS_SQL = """
SELECT l.messaging_contact_id, l.tenant_id, p.id, p.is_stub, p.email, p.phone, p.first_name, p.last_name,
       p.field_sources
FROM unnest(%b::text[]) AS k (contact_id)
CROSS JOIN LATERAL (
    SELECT * FROM crm_contactlink l WHERE l.messaging_contact_id = k.contact_id OFFSET 0
) AS l
JOIN crm_profile p ON p.id = l.profile_id
"""
# Emails and phones are not unique and may be nearly all empty in a tenant: probing per key there made
# the planner pick the tenant index and read the whole tenant for each key (its estimate for
# `phone = <a column>` is one over the distinct phones, 1 when all are empty). Given the values
# themselves, it estimates from their statistics and picks the (tenant, address) index, or one scan
# that hashes the values when many match. So these two are never prepared: a generic plan cannot see
# the values, and for phones it chose a sequential scan that compares every profile with every value
# of the array in turn (9 s for one chunk at 220,000 profiles, against 13 ms planned for the values).
# The tenants and values are matched as two lists: pairs of another row's tenant are dropped by the caller.
# Each tenant's values are looked up apart (_tenant_groups): for one tenant the planner probes the index once
# per value, but for several it counts tenants x values probes and scans the table instead (34 ms a chunk
# of 2,500 emails at 220,000 profiles, growing with the table, against about 1 ms a tenant).
_MATCHES_SQL = {
    column: f"SELECT tenant_id, {column}, array_agg(id) FROM crm_profile"
    f" WHERE tenant_id = ANY(%b::bigint[]) AND {column} = ANY(%b::text[]) GROUP BY 1, 2"
    for column in ("email", "phone")
}


def _lookups(rows: list[ContactStatement]) -> _Lookups:
    with prepared_cursor(prepare=True) as cursor:
        cursor.execute(
            "SELECT external_id, id FROM crm_tenant WHERE external_id = ANY(%s)",
            [sorted({r.tenant_external_id for r in rows})],
        )
        tenants: dict[str, int] = dict(cursor.fetchall())
        cursor.execute(_LINKS_SQL, [[r.contact_id for r in rows]])
        links = {
            contact: _Linked(
                tenant_id,
                profile_id,
                is_stub,
                {"email": email, "phone": phone, "first_name": first, "last_name": last},
                json.loads(sources) if isinstance(sources, str) else sources or {},  # Django reads jsonb as text
            )
            for contact, tenant_id, profile_id, is_stub, email, phone, first, last, sources in cursor.fetchall()
        }
    found: dict[str, dict[tuple[int, str], list[int]]] = {}
    with prepared_cursor(prepare=False) as cursor:  # planned for each chunk's values (see _MATCHES_SQL)
        for column in ("email", "phone"):
            pairs = {
                (tenants[r.tenant_external_id], getattr(r, column))
                for r in rows
                if r.tenant_external_id in tenants and getattr(r, column)
            }
            found[column] = {}
            for tenant_ids, values in _tenant_groups(pairs):
                cursor.execute(_MATCHES_SQL[column], [tenant_ids, values])
                found[column].update(((t, value), ids) for t, value, ids in cursor.fetchall() if (t, value) in pairs)
    return _Lookups(tenants, links, found["email"], found["phone"])


# A file that interleaves more tenants than this in a chunk has them looked up in one statement: one
# statement per tenant would cost more round trips than the probes they save.
_TENANTS_APART = 16


def _tenant_groups(pairs: set[tuple[int, str]]) -> list[tuple[list[int], list[str]]]:
    """The (tenant ids, values) of each lookup for these (tenant id, value) pairs: one per tenant, or one for
    them all past _TENANTS_APART (see _MATCHES_SQL)."""
    by_tenant: dict[int, set[str]] = {}
    for tenant_id, value in pairs:
        by_tenant.setdefault(tenant_id, set()).add(value)
    if len(by_tenant) > _TENANTS_APART:
        return [(sorted(by_tenant), sorted({value for _, value in pairs}))]
    return [([tenant_id], sorted(values)) for tenant_id, values in sorted(by_tenant.items())]


def identity_keys(row: ContactStatement) -> set[str]:
    """The row's contactId, and its email and phone within its tenant: what the file itself says makes two
    rows about the same person."""
    keys = {f"contact:{row.contact_id}"}
    keys.update(
        f"{name}:{row.tenant_external_id}:{value}"
        for name, value in (("email", row.email), ("phone", row.phone))
        if value
    )
    return keys


def _keys(row: ContactStatement, lookups: _Lookups) -> set[str]:
    """Everything that makes two rows of a chunk about the same person (or the same profile): its identity
    keys, and the profiles its contactId, email and phone reach."""
    keys = identity_keys(row)
    tenant_id = lookups.tenants.get(row.tenant_external_id)
    if tenant_id is not None:  # a tenant the CRM does not have yet has no profiles
        for value, matches in ((row.email, lookups.by_email), (row.phone, lookups.by_phone)):
            if value:
                keys.update(f"profile:{pk}" for pk in matches.get((tenant_id, value), ()))
    link = lookups.links.get(row.contact_id)
    if link is not None:
        keys.add(f"profile:{link.profile_id}")
    return keys


def _statement_address(row: ContactStatement, channel: str) -> tuple[str, bool]:
    """(address, stated) as consent.consent_statement_record decides it for a new contact: the address
    the row states, else none known yet (the contact has no earlier address history)."""
    kind = address_kind(channel)
    if kind is None:
        return "", True
    address = row.email if kind == "email" else row.phone
    return (address, True) if address else ("", False)


def _statements(row: ContactStatement) -> list[tuple[str, bool, str]]:
    """The row's consent statements as contact_statement_apply records them: (channel, opted in, tiebreak)."""
    tiebreak = consent_tiebreak(
        source=ConsentSource.MESSAGING_EVENT, source_key=row.source_key, occurred_at=row.occurred_at
    )
    return [(channel, opted_in, tiebreak) for channel, opted_in in sorted(row.opt_ins.items())]


def _fields_unchanged(row: ContactStatement, link: _Linked) -> bool:
    """contact_statement_apply would neither write a field nor note a difference
    (profiles.profile_fields_apply_event)."""
    at = stamp(row.occurred_at)
    for field in IDENTITY_FIELDS:
        new = getattr(row, field)
        if not new:
            continue
        stored = link.fields[field]
        if new != stored or _event_may_set(link.field_sources.get(field), stored, at, row.source_key):
            return False
    return True


def _existing(table: str, columns: tuple[str, ...], types: tuple[str, ...], wanted: list[tuple]) -> set[tuple]:
    """Which of the `wanted` key tuples are rows of `table` (one query for the chunk)."""
    if not wanted:
        return set()
    arrays = ", ".join(f"%b::{t}[]" for t in types)
    match = " AND ".join(f"t.{c} = k.{c}" for c in columns)
    with prepared_cursor(prepare=True) as cursor:
        cursor.execute(  # one probe of the unique index per key, as in _LINKS_SQL (LIMIT keeps it apart)
            f"SELECT {', '.join(f'k.{c}' for c in columns)} FROM unnest({arrays}) AS k ({', '.join(columns)})"
            f" CROSS JOIN LATERAL (SELECT 1 FROM {table} t WHERE {match} LIMIT 1) AS hit",
            [[w[i] for w in wanted] for i in range(len(columns))],
        )
        return set(cursor.fetchall())


def _known_statements(candidates: list[tuple[int, ContactStatement]]) -> set[tuple]:
    return _existing(
        "crm_consentchange",
        ("profile_id", "channel", "tiebreak"),
        ("bigint", "text", "text"),
        [(pk, channel, tiebreak) for pk, row in candidates for channel, _, tiebreak in _statements(row)],
    )


def _row_addresses(row: ContactStatement) -> list[tuple[str, str]]:
    """The (kind, address) pairs contact_statement_apply keeps in ContactAddress for this row."""
    return [(kind, address) for kind, address in (("email", row.email), ("phone", row.phone)) if address]


def _stated_addresses(row: ContactStatement) -> list[tuple[str, str, str]]:
    return [(row.contact_id, kind, row.source_key[:300]) for kind, _ in _row_addresses(row)]


def _known_addresses(rows: list[ContactStatement]) -> set[tuple]:
    return _existing(
        "crm_contactaddress",
        ("contact_id", "kind", "source_key"),
        ("text", "text", "text"),
        [key for row in rows for key in _stated_addresses(row)],
    )


def plan_bulk(items: list[Item]) -> list[Step]:
    """Give each item its disposition (module doc) and group them into steps in file order."""
    valid = [(item, item.statement) for item in items if item.statement is not None]
    lookups = _lookups([row for _, row in valid])
    keys = {id(item): _keys(row, lookups) for item, row in valid}
    for item, _ in valid:
        item.keys = frozenset(keys[id(item)])
    seen = Counter(key for item_keys in keys.values() for key in item_keys)
    maybe_unchanged: list[tuple[Item, ContactStatement]] = []
    for item, row in valid:
        link = lookups.links.get(row.contact_id)
        if any(seen[key] > 1 for key in keys[id(item)]):
            item.disposition = "row"
        elif link is not None:
            usable = link.tenant_id == lookups.tenants.get(row.tenant_external_id) and not link.is_stub
            if usable and _fields_unchanged(row, link):
                maybe_unchanged.append((item, row))
            item.disposition = "row"
        elif any(key.startswith("profile:") for key in keys[id(item)]):
            item.disposition = "row"  # an existing profile to link by email or phone
        else:
            item.disposition = "new"
    known = _known_statements([(lookups.links[row.contact_id].profile_id, row) for _, row in maybe_unchanged])
    known_addresses = _known_addresses([row for _, row in maybe_unchanged])
    for item, row in maybe_unchanged:
        pk = lookups.links[row.contact_id].profile_id
        if all((pk, channel, tiebreak) in known for channel, _, tiebreak in _statements(row)) and all(
            key in known_addresses for key in _stated_addresses(row)
        ):
            item.disposition = "unchanged"
    steps: list[Step] = []
    for item in items:
        if item.disposition == "row":
            steps.append(Step("row", [item]))
        elif steps and steps[-1].kind == "bulk":
            steps[-1].items.append(item)
        else:
            steps.append(Step("bulk", [item]))
    return steps


def _tenants_ensure(external_ids: list[str]) -> dict[str, int]:
    tenants_create(external_ids)
    with prepared_cursor(prepare=True) as cursor:
        cursor.execute("SELECT external_id, id FROM crm_tenant WHERE external_id = ANY(%s)", [external_ids])
        return dict(cursor.fetchall())


# Every statement of a new profile is the first of its channel: recorded, in force, and a change
# (from "no statement"), exactly as consent.consent_statement_record handles it.
_CONSENT_SQL = """
WITH s AS (
    SELECT * FROM unnest(
        %b::bigint[], %b::bigint[], %b::text[], %b::boolean[], %b::timestamptz[], %b::text[], %b::text[],
        %b::boolean[], %b::text[], %b::bigint[]
    ) WITH ORDINALITY AS s (
        tenant_id, profile_id, channel, opted_in, occurred_at, tiebreak, address, address_stated, contact_id,
        source_event_id, n
    )
), change AS (
    INSERT INTO crm_consentchange
        (tenant_id, profile_id, channel, opted_in, occurred_at, recorded_at, source, source_event_id,
         actor_id, lawful_basis, superseded, tiebreak, address, address_stated, contact_id, received_at, warning)
    SELECT tenant_id, profile_id, channel, opted_in, occurred_at, now(), %s, source_event_id, NULL, %s, false,
           tiebreak, address, address_stated, contact_id, NULL, ''
    FROM s ORDER BY n
    RETURNING id, tenant_id, profile_id, channel, opted_in, occurred_at, source, address, source_event_id
), state AS (
    INSERT INTO crm_marketingconsent
        (tenant_id, profile_id, channel, opted_in, changed_at, source, deciding_change_id, address)
    SELECT tenant_id, profile_id, channel, opted_in, occurred_at, source, id, address FROM change
)
INSERT INTO crm_activity (tenant_id, profile_id, type, occurred_at, data, source_event_id, created_at)
SELECT tenant_id, profile_id,
       CASE WHEN opted_in THEN 'CONSENT_OPTED_IN' ELSE 'CONSENT_OPTED_OUT' END,
       occurred_at,
       jsonb_build_object(
           'channel', channel, 'opted_in', opted_in, 'source', source, 'address', address, 'consent_change_id', id
       ),
       source_event_id, now()
FROM change ORDER BY id
"""


def _column_defaults() -> dict[str, object]:
    """Every profile column with its model default, as COPY takes it (read from the model, so a new
    column with a default needs no change here)."""
    defaults = {}
    for field in Profile._meta.concrete_fields:
        value = field.get_default()
        defaults[field.column] = json.dumps(value) if isinstance(field, models.JSONField) else value
    return defaults


def _profile_rows(
    rows: list[ContactStatement], ids: list[int], tenant_ids: list[int], now: datetime
) -> tuple[list[str], list[tuple]]:
    """The new profiles as COPY columns and rows: each column's model default, then the row's fields,
    opt-in flags and their provenance. Built as one list per row from a template (a dict per row, then
    a tuple, cost twice as much), and the provenance JSON written once per row (every field a row sets
    has the same source; jsonb stores the same value as for `json.dumps` of the whole dict)."""
    defaults = {**_column_defaults(), "created_at": now, "updated_at": now}
    columns = list(defaults)
    template = list(defaults.values())
    at = {column: n for n, column in enumerate(columns)}
    identity = [(field, at[field]) for field in IDENTITY_FIELDS]
    out = []
    for row, pk, tenant_id in zip(rows, ids, tenant_ids, strict=True):
        values = template.copy()
        stated = []
        for field, n in identity:
            value = getattr(row, field) or ""
            values[n] = value
            if value:
                stated.append(field)
        for channel, opted_in in row.opt_ins.items():
            values[at[f"{channel}_opt_in"]] = opted_in
        values[at["id"]], values[at["tenant_id"]], values[at["is_stub"]] = pk, tenant_id, False
        source = json.dumps({"by": "event", "at": stamp(row.occurred_at), "event": row.source_key})
        values[at["field_sources"]] = "{" + ",".join(f'"{field}":{source}' for field in stated) + "}"
        out.append(tuple(values))
    return columns, out


def _copy(cursor: CursorWrapper, table: str, columns: list[str], rows: list[tuple]) -> None:
    # Django's wrapper passes `copy` straight to psycopg: its errors become Django's here, as `execute`'s
    # do, so that a unique violation retries the chunk (backfill.RETRYABLE_SQLSTATES).
    with connection.wrap_database_errors, cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


# The new profiles' segment memberships, by the rules the per-event path applies (`segments`): one statement.
_SEGMENTS_SQL = f"""
WITH refreshed AS (SELECT {", ".join(SEGMENT_RULE_COLUMNS)} FROM crm_profile WHERE id = ANY(%s)),
{segment_membership_refresh_ctes("refreshed")}
SELECT 1
"""


def new_contacts_write(rows: list[ContactStatement]) -> dict[str, int]:
    """What contact_statement_apply does for each row planned "new" (module doc), in a few statements: the
    profiles and links by COPY (ids taken from the sequence first, in file order), the consent ledger,
    state and activities in one statement, then segment membership. Each row's `source_event_id` (the
    inbox row of a worker's sign-up, None for a backfill row) is the source of its ledger rows and
    activities, as on the per-event path. Returns the rows' tenants (external id: id)."""
    tenants = _tenants_ensure(sorted({r.tenant_external_id for r in rows}))
    now = timezone.now()
    with prepared_cursor(prepare=True) as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence('crm_profile', 'id')) FROM generate_series(1, %s)", [len(rows)]
        )
        ids = [pk for (pk,) in cursor.fetchall()]
        tenant_ids = [tenants[r.tenant_external_id] for r in rows]
        columns, profiles = _profile_rows(rows, ids, tenant_ids, now)
        _copy(cursor, "crm_profile", columns, profiles)
        _copy(
            cursor,
            "crm_contactlink",
            ["tenant_id", "profile_id", "messaging_contact_id", "created_at"],
            [(t, pk, r.contact_id, now) for r, pk, t in zip(rows, ids, tenant_ids, strict=True)],
        )
        _copy(
            cursor,
            "crm_contactaddress",
            ["tenant_id", "contact_id", "kind", "address", "occurred_at", "source_key"],
            [
                (t, r.contact_id, kind, address, r.occurred_at, r.source_key[:300])
                for r, t in zip(rows, tenant_ids, strict=True)
                for kind, address in _row_addresses(r)
            ],
        )
        statements = [
            (
                t,
                pk,
                channel,
                opted_in,
                r.occurred_at,
                tiebreak,
                *_statement_address(r, channel),
                r.contact_id,
                r.source_event_id,
            )
            for r, pk, t in zip(rows, ids, tenant_ids, strict=True)
            for channel, opted_in, tiebreak in _statements(r)
        ]
        if statements:
            cursor.execute(
                _CONSENT_SQL,
                [[s[i] for s in statements] for i in range(10)]
                + [ConsentSource.MESSAGING_EVENT.value, MESSAGING_LAWFUL_BASIS[:300]],
            )
            # contact_statement_apply recomputes a profile's segments when a statement changes its consent:
            # every statement of a new profile does, and a profile without statements is never recomputed.
            cursor.execute(_SEGMENTS_SQL, [sorted({s[1] for s in statements})])
    return tenants


def contacts_unknown(rows: list[ContactStatement]) -> list[bool]:
    """For each statement (email and phone normalised): whether its contactId has no link and no profile
    of its tenant holds its email or phone, in the lookups of `plan_bulk` (four queries). With nothing
    shared among the rows, that is the disposition "new": the worker's set-based sign-ups use it."""
    if not rows:
        return []
    lookups = _lookups(rows)
    return [not any(key.startswith("profile:") for key in _keys(row, lookups)) for row in rows]
