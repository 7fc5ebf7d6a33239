"""Set-based recording of the high-volume message events: a whole batch in a fixed number of statements.

`message.sent`, `message.delivered`, `email.opened` and `email.clicked` write exactly the rows their
per-event services in `crm.services.messages` write (same activity data, same interaction merge
rules, same `GREATEST` timestamps, same attributions), but for a whole batch at once:

1. one upsert of the `PendingScoreRefresh` rows of the opened/clicked profiles (then one drain
   scheduled after commit);
2. one `FOR NO KEY UPDATE` of the touched profiles, in id order;
3. one insert of the activities;
4. one advisory lock statement on the batch's messages (`interactions.message_locks_acquire`: exclusive
   for a message with a SENT in the batch, shared otherwise), then one multi-row upsert of the
   campaign interactions, folded per (tenant, message, type) first
   (`ON CONFLICT DO UPDATE` cannot touch a row twice), then one update filling the non-SENT rows of
   the batch's sent messages from their SENT row;
5. one insert of the click attributions (when any);
6. one `GREATEST` update of the profiles' timestamps.

Lock order, the same in every batch so that two worker children cannot deadlock: (the caller's
inbox rows by identity,) score-refresh rows by profile id, profiles by id, message locks by key,
interactions by key.

The merge of a folded group reproduces the per-event result exactly: each event's value is its own
when non-empty, else the message's SENT row's (`inherit`); values merge to the non-empty one, or the
bytewise smaller of two non-empty ones.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from crm.models import ActivityType, AttributionEvent, InteractionType
from crm.services.attribution import click_attribution
from crm.services.engagement import engagement_refresh_request_many
from crm.services.interactions import EMAIL_CHANNEL, INTERACTION_ON_CONFLICT_SQL, merge_sql, message_locks_acquire
from crm.services.locks import profiles_lock
from crm.services.messages import email_clicked_data, email_opened_data, message_sent_data
from crm.services.prepared import prepared_cursor
from crm.services.recordsets import recordset_json

BATCHED_INTERACTIONS = (
    InteractionType.SENT,
    InteractionType.DELIVERED,
    InteractionType.OPENED,
    InteractionType.CLICKED,
)
_ACTIVITY_TYPE = {
    InteractionType.SENT: ActivityType.MESSAGE_SENT,
    InteractionType.DELIVERED: ActivityType.MESSAGE_DELIVERED,
    InteractionType.OPENED: ActivityType.EMAIL_OPENED,
    InteractionType.CLICKED: ActivityType.EMAIL_CLICKED,
}
_ENGAGEMENT = (InteractionType.OPENED, InteractionType.CLICKED)
# Which profile timestamps each kind moves forward (crm.services.messages._touch calls).
_TOUCHES: dict[str, tuple[str, ...]] = {
    InteractionType.SENT: ("last_message_at",),
    InteractionType.OPENED: ("last_activity_at", "last_email_open_at"),
    InteractionType.CLICKED: ("last_activity_at",),
}

_LINKS_SQL = """
SELECT l.messaging_contact_id, l.profile_id, l.tenant_id, t.external_id
FROM crm_contactlink l JOIN crm_tenant t ON t.id = l.tenant_id
WHERE l.messaging_contact_id = ANY(%s)
"""

_ACTIVITIES_SQL = """
INSERT INTO crm_activity (tenant_id, profile_id, type, occurred_at, data, source_event_id, created_at)
SELECT a.tenant_id, a.profile_id, a.type, a.occurred_at, a.data, a.source_event_id, now()
FROM jsonb_to_recordset(%s::jsonb)
     AS a(tenant_id bigint, profile_id bigint, type text, occurred_at timestamptz, data jsonb, source_event_id bigint)
"""


def _inherited(column: str) -> str:
    return f"CASE WHEN v.{column}_inherit THEN COALESCE(s.{column}, '') ELSE '' END"


_INTERACTIONS_SQL = f"""
INSERT INTO crm_campaigninteraction
    (tenant_id, profile_id, message_id, type, campaign_id, template_id, channel, count, first_at, last_at)
SELECT v.tenant_id, v.profile_id, v.message_id, v.type,
       {merge_sql("v.campaign_id", _inherited("campaign_id"))},
       {merge_sql("v.template_id", _inherited("template_id"))},
       {merge_sql("v.channel", _inherited("channel"))},
       v.count, v.first_at, v.last_at
FROM jsonb_to_recordset(%s::jsonb)
     AS v(ord int, tenant_id bigint, profile_id bigint, message_id text, type text,
          campaign_id text, campaign_id_inherit bool, template_id text, template_id_inherit bool,
          channel text, channel_inherit bool, count int, first_at timestamptz, last_at timestamptz)
LEFT JOIN crm_campaigninteraction s
       ON s.tenant_id = v.tenant_id AND s.message_id = v.message_id AND s.type = 'SENT'
ORDER BY v.ord
{INTERACTION_ON_CONFLICT_SQL}
"""

_FILL_FROM_SENT_SQL = """
UPDATE crm_campaigninteraction ci SET
    campaign_id = CASE WHEN ci.campaign_id = '' THEN s.campaign_id ELSE ci.campaign_id END,
    template_id = CASE WHEN ci.template_id = '' THEN s.template_id ELSE ci.template_id END,
    channel = CASE WHEN ci.channel = '' THEN s.channel ELSE ci.channel END
FROM crm_campaigninteraction s, jsonb_to_recordset(%s::jsonb) AS k(tenant_id bigint, message_id text)
WHERE s.tenant_id = k.tenant_id AND s.message_id = k.message_id AND s.type = 'SENT'
  AND ci.tenant_id = k.tenant_id AND ci.message_id = k.message_id AND ci.type <> 'SENT'
  AND ((ci.campaign_id = '' AND s.campaign_id <> '')
       OR (ci.template_id = '' AND s.template_id <> '')
       OR (ci.channel = '' AND s.channel <> ''))
"""

_TOUCH_SQL = """
UPDATE crm_profile p SET
    last_message_at = GREATEST(p.last_message_at, v.last_message_at),
    last_activity_at = GREATEST(p.last_activity_at, v.last_activity_at),
    last_email_open_at = GREATEST(p.last_email_open_at, v.last_email_open_at)
FROM jsonb_to_recordset(%s::jsonb)
     AS v(id bigint, last_message_at timestamptz, last_activity_at timestamptz, last_email_open_at timestamptz)
WHERE p.id = v.id
"""


@dataclass(frozen=True)
class LinkRow:
    """A contact link as the batch needs it: no model instances, one query for the whole batch."""

    contact_id: str
    profile_id: int
    tenant_id: int
    tenant_external_id: str


@dataclass(frozen=True)
class MessageRecord:
    """One message event to record for a linked profile. Empty strings stand for absent fields."""

    kind: InteractionType
    tenant_id: int
    profile_id: int
    source_event_id: int
    occurred_at: datetime
    message_id: str
    channel: str = ""
    template_id: str = ""
    template_name: str = ""
    campaign_id: str = ""
    device_type: str = ""
    link_id: str = ""
    link_url: str = ""


def contact_links_fetch(*, contact_ids: Iterable[str]) -> dict[str, LinkRow]:
    """The links of these contact ids, with their tenant's external id, in one query."""
    ids = sorted(set(contact_ids))
    if not ids:
        return {}
    with prepared_cursor() as cursor:
        cursor.execute(_LINKS_SQL, [ids])
        return {row[0]: LinkRow(*row) for row in cursor.fetchall()}


def _activity_data(record: MessageRecord) -> dict[str, str]:
    if record.kind == InteractionType.SENT:
        return message_sent_data(
            message_id=record.message_id,
            channel=record.channel,
            template_id=record.template_id,
            template_name=record.template_name,
            campaign_id=record.campaign_id,
        )
    if record.kind == InteractionType.OPENED:
        return email_opened_data(
            message_id=record.message_id, campaign_id=record.campaign_id, device_type=record.device_type
        )
    if record.kind == InteractionType.CLICKED:
        return email_clicked_data(
            message_id=record.message_id,
            campaign_id=record.campaign_id,
            link_id=record.link_id,
            link_url=record.link_url,
        )
    return {"message_id": record.message_id}


@dataclass
class _FoldedValue:
    """A campaign/template/channel column of a folded interaction group."""

    smallest: str = ""  # the bytewise smallest non-empty value the events stated
    inherit: bool = False  # some event stated none: it takes the SENT row's

    def add(self, value: str) -> None:
        if not value:
            self.inherit = True
        elif not self.smallest or value < self.smallest:  # str order is code point order = UTF-8 byte order
            self.smallest = value


@dataclass
class _Interaction:
    tenant_id: int
    profile_id: int
    message_id: str
    type: str
    first_at: datetime
    last_at: datetime
    count: int = 0
    columns: dict[str, _FoldedValue] = field(
        default_factory=lambda: {name: _FoldedValue() for name in ("campaign_id", "template_id", "channel")}
    )


def _interaction_values(record: MessageRecord) -> dict[str, str]:
    """The campaign, template and channel an event states for its interaction (as the per-event services)."""
    if record.kind == InteractionType.SENT:
        return {"campaign_id": record.campaign_id, "template_id": record.template_id, "channel": record.channel}
    if record.kind in _ENGAGEMENT:
        return {"campaign_id": record.campaign_id, "template_id": "", "channel": EMAIL_CHANNEL}
    return {"campaign_id": "", "template_id": "", "channel": ""}


def _fold_interactions(records: list[MessageRecord]) -> list[_Interaction]:
    folded: dict[tuple[int, str, str], _Interaction] = {}
    for record in records:
        key = (record.tenant_id, record.message_id, record.kind.value)
        group = folded.get(key)
        if group is None:
            group = folded[key] = _Interaction(
                record.tenant_id, record.profile_id, record.message_id, record.kind.value, record.occurred_at,
                record.occurred_at,
            )  # fmt: skip
        group.count += 1
        group.first_at = min(group.first_at, record.occurred_at)
        group.last_at = max(group.last_at, record.occurred_at)
        for name, value in _interaction_values(record).items():
            group.columns[name].add(value)
    return [folded[key] for key in sorted(folded)]  # the lock order: interactions by key


def _insert_activities(records: list[MessageRecord]) -> None:
    rows = [
        {
            "tenant_id": r.tenant_id,
            "profile_id": r.profile_id,
            "type": _ACTIVITY_TYPE[r.kind].value,
            "occurred_at": r.occurred_at,
            "data": _activity_data(r),
            "source_event_id": r.source_event_id,
        }
        for r in records
    ]
    with prepared_cursor() as cursor:
        cursor.execute(_ACTIVITIES_SQL, [recordset_json(rows)])


def _upsert_interactions(records: list[MessageRecord]) -> None:
    rows = []
    for ord, g in enumerate(_fold_interactions(records)):
        row = {
            "ord": ord,
            "tenant_id": g.tenant_id,
            "profile_id": g.profile_id,
            "message_id": g.message_id,
            "type": g.type,
            "count": g.count,
            "first_at": g.first_at,
            "last_at": g.last_at,
        }
        for name, value in g.columns.items():
            row[name], row[f"{name}_inherit"] = value.smallest, value.inherit
        rows.append(row)
    sent = sorted({(r.tenant_id, r.message_id) for r in records if r.kind == InteractionType.SENT})
    message_locks_acquire(sent=sent, others={(r.tenant_id, r.message_id) for r in records})
    with prepared_cursor() as cursor:
        cursor.execute(_INTERACTIONS_SQL, [recordset_json(rows)])
        if sent:
            keys = [{"tenant_id": tenant_id, "message_id": message_id} for tenant_id, message_id in sent]
            cursor.execute(_FILL_FROM_SENT_SQL, [recordset_json(keys)])


def _touch_profiles(touches: dict[int, dict[str, datetime]]) -> None:
    rows = [{"id": pk, **touches[pk]} for pk in sorted(touches)]  # absent fields read as NULL: GREATEST skips them
    with prepared_cursor() as cursor:
        cursor.execute(_TOUCH_SQL, [recordset_json(rows)])


def message_records_apply(*, records: list[MessageRecord]) -> None:
    """Record a batch of message events for linked profiles. Call inside the batch's transaction."""
    if not records:
        return
    engagement_refresh_request_many(profile_ids=[r.profile_id for r in records if r.kind in _ENGAGEMENT])
    touches: dict[int, dict[str, datetime]] = {}
    for record in records:
        for name in _TOUCHES.get(record.kind, ()):
            stored = touches.setdefault(record.profile_id, {}).get(name)
            touches[record.profile_id][name] = max(stored, record.occurred_at) if stored else record.occurred_at
    profiles_lock(list(touches))
    _insert_activities(records)
    _upsert_interactions(records)
    attributions = [
        attribution
        for r in records
        if r.kind == InteractionType.CLICKED
        and (
            attribution := click_attribution(
                tenant_id=r.tenant_id,
                profile_id=r.profile_id,
                source_event_id=r.source_event_id,
                message_id=r.message_id,
                campaign_id=r.campaign_id,
                link_id=r.link_id,
                link_url=r.link_url,
                occurred_at=r.occurred_at,
            )
        )
        is not None
    ]
    if attributions:
        AttributionEvent.objects.bulk_create(attributions)
    if touches:
        _touch_profiles(touches)
